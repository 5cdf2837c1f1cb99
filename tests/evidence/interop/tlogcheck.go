// tlogcheck verifies Tenure's proofs with Go's golang.org/x/mod/sumdb (note and tlog):
// an independent implementation of C2SP signed notes and RFC 6962 proofs.
//
// Usage: tlogcheck VKEY PROOF_FILE...
// Each file is a c2sp.org/tlog-proof@v1 inclusion proof or a tenure.dev/tlog-consistency@v1
// consistency proof; it prints "ok <file>" per verified proof and exits 1 at the first failure.
package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func hashOf(line string) (tlog.Hash, error) {
	var h tlog.Hash
	b, err := base64.StdEncoding.DecodeString(line)
	if err != nil || len(b) != tlog.HashSize {
		return h, fmt.Errorf("bad hash %q", line)
	}
	copy(h[:], b)
	return h, nil
}

// openCheckpoint verifies a signed checkpoint note and returns its size and root.
func openCheckpoint(msg string, verifier note.Verifier) (int64, tlog.Hash, error) {
	n, err := note.Open([]byte(msg), note.VerifierList(verifier))
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[0] != verifier.Name() {
		return 0, tlog.Hash{}, errors.New("checkpoint origin is not the key's name")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	root, err := hashOf(lines[2])
	return size, root, err
}

// splitNotes cuts the signed notes that follow the proof's blank line.
func splitNotes(rest string, count int) ([]string, error) {
	var notes []string
	lines := strings.Split(rest, "\n")
	i := 0
	for k := 0; k < count; k++ {
		start := i
		for i < len(lines) && lines[i] != "" {
			i++
		}
		i++
		for i < len(lines) && strings.HasPrefix(lines[i], "\u2014 ") {
			i++
		}
		notes = append(notes, strings.Join(lines[start:i], "\n")+"\n")
		i++
	}
	if len(notes) != count {
		return nil, errors.New("missing checkpoint")
	}
	return notes, nil
}

func check(text string, verifier note.Verifier) error {
	head, rest, ok := strings.Cut(text, "\n\n")
	if !ok {
		return errors.New("no blank line")
	}
	lines := strings.Split(head, "\n")
	switch lines[0] {
	case "c2sp.org/tlog-proof@v1":
		record, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[1], "extra "))
		if err != nil {
			return err
		}
		index, err := strconv.ParseInt(strings.TrimPrefix(lines[2], "index "), 10, 64)
		if err != nil {
			return err
		}
		var proof tlog.RecordProof
		for _, l := range lines[3:] {
			h, err := hashOf(l)
			if err != nil {
				return err
			}
			proof = append(proof, h)
		}
		notes, err := splitNotes(rest, 1)
		if err != nil {
			return err
		}
		size, root, err := openCheckpoint(notes[0], verifier)
		if err != nil {
			return err
		}
		return tlog.CheckRecord(proof, size, root, index, tlog.RecordHash(record))
	case "tenure.dev/tlog-consistency@v1":
		old, err := strconv.ParseInt(strings.TrimPrefix(lines[1], "old "), 10, 64)
		if err != nil {
			return err
		}
		var proof tlog.TreeProof
		for _, l := range lines[2:] {
			h, err := hashOf(l)
			if err != nil {
				return err
			}
			proof = append(proof, h)
		}
		notes, err := splitNotes(rest, 2)
		if err != nil {
			return err
		}
		oldSize, oldRoot, err := openCheckpoint(notes[0], verifier)
		if err != nil {
			return err
		}
		if oldSize != old {
			return errors.New("old size differs from the older checkpoint's")
		}
		size, root, err := openCheckpoint(notes[1], verifier)
		if err != nil {
			return err
		}
		return tlog.CheckTree(proof, size, root, oldSize, oldRoot)
	}
	return fmt.Errorf("unknown proof type %q", lines[0])
}

func main() {
	verifier, err := note.NewVerifier(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "verifier key:", err)
		os.Exit(2)
	}
	for _, path := range os.Args[2:] {
		data, err := os.ReadFile(path)
		if err == nil {
			err = check(string(data), verifier)
		}
		if err != nil {
			fmt.Printf("FAIL %s: %v\n", path, err)
			os.Exit(1)
		}
		fmt.Printf("ok %s\n", path)
	}
}
