package cli

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
	"godwit.dev/godwit/internal/migration/spec"
	"godwit.dev/godwit/internal/specsig"
)

// newSignCmd is `godwit sign`: sign a migration's steps for agents whose policy trusts the key
// (docs/security.md, "Signed specs"), make a key pair, and check a signature.
func newSignCmd(stdio IO) *cobra.Command {
	var file, keyFile string
	var write bool
	cmd := &cobra.Command{
		Use:   "sign -f SPEC --key PRIVATE_KEY",
		Short: "Sign a migration's steps with an ed25519 key; prints the spec with spec.signature set (-w: in place)",
		Long: `Sign a migration's steps with an ed25519 key. The signature covers the migration's name and every
command and timeout of every step (rollback included); it is written into spec.signature, and
the hub hands it unchanged to agents, which refuse unsigned or altered steps when their policy
trusts signing keys. Signing again replaces the signature. Make a key pair with godwit sign keygen.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" || keyFile == "" {
				return usageError{errors.New("-f/--filename and --key are required")}
			}
			if write && file == "-" {
				return usageError{errors.New("-w writes the file in place: it needs a file, not standard input")}
			}
			body, err := readSpecFile(stdio, file)
			if err != nil {
				return usageError{err}
			}
			key, err := specsig.ReadPrivateKey(keyFile)
			if err != nil {
				return usageError{fmt.Errorf("--key: %w", err)}
			}
			m, err := signable(body)
			if err != nil {
				return err
			}
			env := specsig.Sign(key, m.Metadata.Name, m.StepSpecs())
			out, err := setSignature(body, env.String())
			if err != nil {
				return err
			}
			// Read back what is written, as the hub and an agent will.
			if err := verifySpec(out, []specsig.TrustedKey{{Name: keyFile, Key: key.Public().(ed25519.PublicKey)}}); err != nil {
				return fmt.Errorf("the signed spec does not verify (a bug): %w", err)
			}
			if !write {
				_, err = stdio.Out.Write(out)
				return err
			}
			st, err := os.Stat(file)
			if err != nil {
				return err
			}
			if err := os.WriteFile(file, out, st.Mode().Perm()); err != nil {
				return err
			}
			fmt.Fprintf(stdio.Err, "%s: migration %s signed with key %s\n", file, m.Metadata.Name, env.KeyID)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "Migration spec to sign (- for standard input)")
	cmd.Flags().StringVar(&keyFile, "key", "", "ed25519 private key file (PEM, PKCS #8, mode 0600)")
	cmd.Flags().BoolVarP(&write, "write", "w", false, "write the signed spec back to the file instead of standard output")
	cmd.AddCommand(newSignKeygenCmd(stdio), newSignVerifyCmd(stdio))
	return cmd
}

func newSignKeygenCmd(stdio IO) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out NAME",
		Short: "Make an ed25519 key pair: NAME.key (private, 0600) and NAME.pub (public, for agent policies)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageError{errors.New("--out is required")}
			}
			pub, priv, err := specsig.GenerateKey()
			if err != nil {
				return err
			}
			privPEM, err := specsig.MarshalPrivateKey(priv)
			if err != nil {
				return err
			}
			pubPEM, err := specsig.MarshalPublicKey(pub)
			if err != nil {
				return err
			}
			// Never overwrite a key: a lost private key is a re-signing of every spec.
			if err := writeNew(out+".key", privPEM, 0o600); err != nil {
				return err
			}
			if err := writeNew(out+".pub", pubPEM, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(stdio.Out, "private key %s.key (keep it secret)\npublic key  %s.pub (key id %s: list it in the agents' policy under spec.signatures.trustedKeys)\n",
				out, out, specsig.KeyID(pub))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "path prefix of the key files")
	return cmd
}

func newSignVerifyCmd(stdio IO) *cobra.Command {
	var file string
	var pubs []string
	cmd := &cobra.Command{
		Use:   "verify -f SPEC --public-key FILE...",
		Short: "Check a spec's signature as an agent would",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" || len(pubs) == 0 {
				return usageError{errors.New("-f/--filename and --public-key are required")}
			}
			body, err := readSpecFile(stdio, file)
			if err != nil {
				return usageError{err}
			}
			var keys []specsig.TrustedKey
			for _, p := range pubs {
				data, err := os.ReadFile(p)
				if err != nil {
					return usageError{err}
				}
				k, err := specsig.ParsePublicKey(data)
				if err != nil {
					return usageError{fmt.Errorf("%s: %w", p, err)}
				}
				keys = append(keys, specsig.TrustedKey{Name: p, Key: k})
			}
			if err := verifySpec(body, keys); err != nil {
				return err
			}
			fmt.Fprintln(stdio.Out, "signature OK")
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "signed Migration spec (- for standard input)")
	cmd.Flags().StringArrayVar(&pubs, "public-key", nil, "trusted public key file (PEM; repeatable)")
	return cmd
}

func readSpecFile(stdio IO, file string) ([]byte, error) {
	if file == "-" {
		return io.ReadAll(stdio.In)
	}
	return os.ReadFile(file)
}

// signable parses a Migration and validates it with any signature it has left out.
func signable(body []byte) (*spec.Migration, error) {
	m, err := spec.Parse(body)
	if err != nil {
		return nil, err
	}
	m.Spec.Signature = ""
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// verifySpec checks a spec's signature against keys, as an agent does with the steps it gets.
func verifySpec(body []byte, keys []specsig.TrustedKey) error {
	m, err := spec.Parse(body)
	if err != nil {
		return err
	}
	if err := m.Validate(); err != nil {
		return err
	}
	if _, err := specsig.Verify(keys, m.Spec.Signature, m.Metadata.Name, m.StepSpecs()); err != nil {
		return fmt.Errorf("migration %s: %w", m.Metadata.Name, err)
	}
	return nil
}

// setSignature returns the document with spec.signature set to sig, comments and the order of
// the other fields kept.
func setSignature(body []byte, sig string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(body, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("the spec is not a mapping")
	}
	root := doc.Content[0]
	var specNode *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "spec" {
			specNode = root.Content[i+1]
		}
	}
	if specNode == nil || specNode.Kind != yaml.MappingNode {
		return nil, errors.New("spec: must be a mapping")
	}
	specNode.Style &^= yaml.FlowStyle
	value := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: sig}
	for i := 0; i+1 < len(specNode.Content); i += 2 {
		if specNode.Content[i].Value == "signature" {
			specNode.Content[i+1] = value
			return encodeYAML(&doc)
		}
	}
	specNode.Content = append(specNode.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "signature"}, value)
	return encodeYAML(&doc)
}

func encodeYAML(doc *yaml.Node) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
