package hubcmd

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCgroupMemoryLimit(t *testing.T) {
	cases := []struct {
		name   string
		files  map[string]string
		want   int64
		wantAt string
	}{
		{"v2 limit", map[string]string{"proc/self/cgroup": "0::/hub.slice\n", "sys/fs/cgroup/hub.slice/memory.max": "2147483648\n"},
			2 << 30, "sys/fs/cgroup/hub.slice/memory.max"},
		{"v2 namespaced root", map[string]string{"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/memory.max": "1073741824\n"},
			1 << 30, "sys/fs/cgroup/memory.max"},
		{"v2 no limit", map[string]string{"proc/self/cgroup": "0::/x\n", "sys/fs/cgroup/x/memory.max": "max\n"},
			0, "sys/fs/cgroup/x/memory.max"},
		{"v1 limit", map[string]string{"proc/self/cgroup": "5:cpu,cpuacct:/\n4:memory:/docker/abc\n0::/\n",
			"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "536870912\n"},
			512 << 20, "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes"},
		{"v1 no limit", map[string]string{"proc/self/cgroup": "4:memory:/\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0, "sys/fs/cgroup/memory/memory.limit_in_bytes"},
		{"no cgroup files", map[string]string{"proc/self/cgroup": "0::/gone\n"}, 0, ""},
		{"garbage", map[string]string{"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/memory.max": "lots\n"}, 0, "sys/fs/cgroup/memory.max"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			for p, content := range c.files {
				full := filepath.Join(root, p)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, at := cgroupMemoryLimit(root)
			wantAt := ""
			if c.wantAt != "" {
				wantAt = filepath.Join(root, c.wantAt)
			}
			if got != c.want || at != wantAt {
				t.Errorf("got %d from %q, want %d from %q", got, at, c.want, wantAt)
			}
		})
	}
}
