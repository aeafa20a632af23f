package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadSecretIDTrimsWhatFilesAndVariablesAdd(t *testing.T) {
	const id = "5f2b6c1e-0d4a-4c1e-9a57-2f6f3c8b9d10"
	for _, tc := range []struct {
		name    string
		content string
	}{
		{"bare", id},
		{"echo newline", id + "\n"},
		{"crlf", id + "\r\n"},
		{"padded", "  " + id + "\t\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "secret-id")
			if err := os.WriteFile(file, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := readSecretID(file)
			if err != nil || got != id {
				t.Fatalf("file: %q, %v; want %q", got, err, id)
			}
			t.Setenv("EDGE_SECRET_ID", tc.content)
			if got, err := readSecretID(""); err != nil || got != id {
				t.Fatalf("EDGE_SECRET_ID: %q, %v; want %q", got, err, id)
			}
		})
	}
}

func TestReadSecretIDRefusesAnEmptyOrMissingFile(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{empty, filepath.Join(dir, "missing")} {
		if got, err := readSecretID(file); err == nil {
			t.Errorf("%s: got %q, want an error", file, got)
		}
	}
}
