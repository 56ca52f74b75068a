package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	gbuild "godwit.dev/godwit/internal/buildinfo"
)

// stamped ties the -X flags of scripts/release to the variables they set: renaming one of these
// breaks this test's build, and a flag naming anything else fails it.
var stamped = map[string]*string{
	"Version": &gbuild.Version, "Commit": &gbuild.Commit, "CommitDate": &gbuild.CommitDate, "BuildDate": &gbuild.BuildDate,
}

// scripts/release cross-builds a static linux/arm64 binary, stamped with the version and dates,
// packed with the units and monitoring files and listed in SHA256SUMS. CI runs this (scripts/test
// runs every package), so the arm64 build keeps working; the Go build cache keeps it cheap.
func TestReleaseBuildsArm64(t *testing.T) {
	if testing.Short() {
		t.Skip("release build skipped in -short mode")
	}
	dist := t.TempDir()
	version := fmt.Sprintf("v0.0.0-releasetest.%d", time.Now().UnixNano())
	const epoch = 1767225600 // 2026-01-01T00:00:00Z
	cmd := exec.Command("../../scripts/release", version)
	cmd.Env = append(os.Environ(), "GODWIT_RELEASE_PLATFORMS=linux/arm64", "GODWIT_RELEASE_DIST="+dist,
		fmt.Sprintf("SOURCE_DATE_EPOCH=%d", epoch))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/release: %v\n%s", err, out)
	}
	archive := "godwit_" + version + "_linux_arm64.tar.gz"

	// SHA256SUMS lists the archive with its digest.
	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dist, archive))
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(raw)
	if want := hex.EncodeToString(digest[:]) + "  " + archive + "\n"; string(sums) != want {
		t.Fatalf("SHA256SUMS = %q, want %q", sums, want)
	}

	// The archive holds the binary and the files an install needs, nothing else.
	files := map[string][]byte{}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.ModTime.Unix() != epoch {
			t.Errorf("%s: owner %d:%d, time %s: not reproducible", h.Name, h.Uid, h.Gid, h.ModTime)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[strings.TrimPrefix(h.Name, "godwit_"+version+"_linux_arm64/")] = b
		}
	}
	for _, want := range []string{"godwit", "README.md", "docs/install.md", "deploy/systemd/godwit-hub.service", "deploy/systemd/godwit-agent.service",
		"deploy/systemd/hub.env", "deploy/systemd/agent.env", "deploy/systemd/godwit-agent.service.d/strict.conf",
		"deploy/monitoring/godwit-alerts.yaml", "deploy/monitoring/godwit-dashboard.json"} {
		if files[want] == nil {
			t.Errorf("%s lacks %s", archive, want)
		}
	}
	for name := range files {
		if strings.HasSuffix(name, ".go") {
			t.Errorf("%s holds %s", archive, name)
		}
	}
	bin := files["godwit"]
	if bin == nil {
		t.FailNow()
	}

	// An ELF executable for aarch64, static: no interpreter, no shared libraries.
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("godwit is not ELF: %v", err)
	}
	if f.Machine != elf.EM_AARCH64 || f.Class != elf.ELFCLASS64 || f.Type != elf.ET_EXEC {
		t.Errorf("godwit: machine %s, class %s, type %s; want EM_AARCH64, ELFCLASS64, ET_EXEC", f.Machine, f.Class, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("godwit has a %s program header: not static", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("godwit needs shared libraries %v", libs)
	}

	// Built with cgo off and -trimpath, stamped through -X into real variables.
	bi, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("godwit has no Go build information: %v", err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	for k, want := range map[string]string{"CGO_ENABLED": "0", "-trimpath": "true", "GOOS": "linux", "GOARCH": "arm64"} {
		if settings[k] != want {
			t.Errorf("build setting %s = %q, want %q", k, settings[k], want)
		}
	}
	// -trimpath leaves -ldflags out of the build information, so the stamp is read where
	// `godwit version` reads it: in the binary's data. Each -X of the script names a variable
	// of internal/buildinfo (the linker would ignore any other name without a word).
	script, err := os.ReadFile("../../scripts/release")
	if err != nil {
		t.Fatal(err)
	}
	xs := regexp.MustCompile(`-X \$pkg\.([A-Za-z0-9_]+)=`).FindAllStringSubmatch(string(script), -1)
	set := map[string]bool{}
	for _, x := range xs {
		if _, ok := stamped[x[1]]; !ok {
			t.Errorf("scripts/release sets -X %s, which is not a variable of internal/buildinfo", x[1])
		}
		set[x[1]] = true
	}
	if len(set) != len(stamped) {
		t.Errorf("scripts/release sets %v with -X, want all of %d variables", set, len(stamped))
	}
	want := []string{version, "2026-01-01T00:00:00Z"}
	if head, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		want = append(want, strings.TrimSpace(string(head)))
	}
	for _, s := range want {
		if !bytes.Contains(bin, []byte(s)) {
			t.Errorf("%q is not stamped into the binary", s)
		}
	}
	t.Logf("%s: %d bytes, %s", archive, len(raw), firstLine(sums))
}

func firstLine(b []byte) string {
	s := bufio.NewScanner(bytes.NewReader(b))
	s.Scan()
	return s.Text()
}
