package wire

// Files in a hub's data dir that clients on the same machine read: the CLI finds a local hub
// by them, and so do tests and godwit bench.
const (
	HubEndpointFile = "endpoint.json" // a HubEndpoint, written at every start
	AdminTokenFile  = "admin.token"   // the admin token (mode 0600), written at the first start
	// HeapProfileDir holds the heap profiles a hub writes on SIGUSR1 (heap-<UTC time>.pb.gz).
	HeapProfileDir = "profiles"
)

// HubEndpoint is where a running hub listens: the content of HubEndpointFile.
type HubEndpoint struct {
	API  string   `json:"api"`
	NATS []string `json:"nats"`
	PID  int      `json:"pid"`
	// CA is the file of the CA the hub's certificate verifies against, when it serves TLS with one.
	CA string `json:"ca,omitempty"`
}
