package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeProgramsBuild keeps the README true: every Go program in it
// (a ```go block that starts with "package main") must build against this
// module as it is.
func TestReadmeProgramsBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the README's programs")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```go\n(package main\n.*?)```").FindAllStringSubmatch(string(readme), -1)
	if len(blocks) < 2 {
		t.Fatalf("found %d Go programs in README.md, want the quick start and the HTTP example", len(blocks))
	}
	// A folder inside the module, so that the programs import it.
	dir, err := os.MkdirTemp("../..", ".readme-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for i, b := range blocks {
		pkg := filepath.Join(dir, "p"+string(rune('a'+i)))
		if err := os.Mkdir(pkg, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pkg, "main.go"), []byte(b[1]), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("go", "vet", "./"+filepath.Base(pkg))
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			first, _, _ := strings.Cut(b[1], "func main")
			t.Errorf("README program %d does not build: %v\n%s\n%s", i+1, err, out, first)
		}
	}
}
