package acceptance

// The machinery behind the documentation tests (docs_test.go,
// tutorial_test.go): a small Markdown reader and a replayer that runs the
// ```sh blocks of a document, in order, in one bash session against a real
// Vault, and checks each against the ```text block that follows it.
//
// Conventions a replayed document follows (docs/tutorial.md states them for
// its readers too):
//
//   - Every ```sh block is run, top to bottom, in one bash session with
//     `set -euo pipefail`, so shell variables set by one block (KEY=$(vault
//     read -field=api_key ...)) are there for the next; stdin is /dev/null.
//     A failing command fails the test.
//   - A ```text block right after a ```sh block (only blank lines between)
//     is what the block's output (stdout and stderr) must show: each
//     non-blank line must match an output line, in order, with runs of
//     spaces treated as one space and "..." matching anything. Output lines
//     not shown are allowed (a line of "..." alone just marks them).
//   - An HTML comment right before a ```sh block changes how it is replayed:
//     <!-- replay: skip <reason> -->   not run (say why);
//     <!-- replay: inputs -->          not run: it sets values only the
//                                      reader knows (addresses, paths); the
//                                      test must provide every variable the
//                                      block assigns, and does;
//     <!-- replay: fails -->           must exit non-zero (in a subshell,
//                                      so its variables do not persist).

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// docsBlock is one ```sh block of a document.
type docsBlock struct {
	Line       int // line of the opening fence, 1-based
	Code       string
	Expect     string // the ```text block after it, if any
	HasExpect  bool
	ExpectLine int
	Directive  string // "", "skip", "inputs" or "fails"
	Reason     string
	// Headings in force at the block: Headings[2] is the current "##",
	// Headings[3] the "###", Headings[4] the "####" ("" when none).
	Headings [5]string
}

// docsTable is a Markdown table: its header cells and rows of cells.
type docsTable struct {
	Line     int
	Header   []string
	Rows     [][]string
	RowLines []int
	Headings [5]string
}

// docsDoc is what the replayer and the API check need of a document.
type docsDoc struct {
	Path     string
	Blocks   []docsBlock
	Tables   []docsTable
	Headings []docsHeading
}

type docsHeading struct {
	Level int
	Text  string
	Line  int
}

var (
	docsFenceRE     = regexp.MustCompile("^```\\s*([A-Za-z0-9_+-]*)")
	docsDirectiveRE = regexp.MustCompile(`^<!--\s*replay:\s*([a-z]+)\s*(.*?)\s*-->\s*$`)
	docsHeadingRE   = regexp.MustCompile(`^(#{1,6})\s+(.*?)\s*#*\s*$`)
)

// docsRead parses a document of the repository (path relative to its root).
func docsRead(t *testing.T, rel string) *docsDoc {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	doc, err := docsParse(rel, string(data))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func docsParse(name, text string) (*docsDoc, error) {
	doc := &docsDoc{Path: name}
	lines := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	var headings [5]string
	directive, reason, directiveLine := "", "", 0
	lastSh := -1    // index in doc.Blocks of the last ```sh block ...
	lastShEnd := -1 // ... and the line its fence closed on (0-based)
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if m := docsFenceRE.FindStringSubmatch(line); m != nil {
			lang := m[1]
			start := i
			var body []string
			i++
			for ; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
				body = append(body, lines[i])
			}
			if i == len(lines) {
				return nil, fmt.Errorf("%s:%d: code block never closed", name, start+1)
			}
			content := strings.Join(body, "\n")
			switch lang {
			case "sh":
				b := docsBlock{Line: start + 1, Code: content, Headings: headings}
				if directive != "" {
					b.Directive, b.Reason = directive, reason
				}
				doc.Blocks = append(doc.Blocks, b)
				lastSh, lastShEnd = len(doc.Blocks)-1, i
			case "text":
				if lastSh >= 0 && docsOnlyBlank(lines[lastShEnd+1:start]) {
					b := &doc.Blocks[lastSh]
					if b.HasExpect {
						return nil, fmt.Errorf("%s:%d: two ```text blocks after one ```sh block", name, start+1)
					}
					b.Expect, b.HasExpect, b.ExpectLine = content, true, start+1
				}
			}
			if directive != "" && lang != "sh" {
				return nil, fmt.Errorf("%s:%d: replay directive is not followed by a ```sh block", name, directiveLine)
			}
			directive, reason = "", ""
			continue
		}
		trimmed := strings.TrimSpace(line)
		if m := docsDirectiveRE.FindStringSubmatch(trimmed); m != nil {
			switch m[1] {
			case "skip", "inputs", "fails":
			default:
				return nil, fmt.Errorf("%s:%d: unknown replay directive %q", name, i+1, m[1])
			}
			if m[1] == "skip" && m[2] == "" {
				return nil, fmt.Errorf("%s:%d: replay: skip needs a reason", name, i+1)
			}
			directive, reason, directiveLine = m[1], m[2], i+1
			continue
		}
		if m := docsHeadingRE.FindStringSubmatch(line); m != nil {
			level := len(m[1])
			if level <= 4 {
				headings[level] = m[2]
				for l := level + 1; l < len(headings); l++ {
					headings[l] = ""
				}
			}
			doc.Headings = append(doc.Headings, docsHeading{Level: level, Text: m[2], Line: i + 1})
		}
		if strings.HasPrefix(trimmed, "|") {
			tb := docsTable{Line: i + 1, Headings: headings}
			for ; i < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[i]), "|"); i++ {
				cells := docsSplitRow(lines[i])
				switch {
				case tb.Header == nil:
					tb.Header = cells
				case docsIsSeparatorRow(cells):
				default:
					tb.Rows = append(tb.Rows, cells)
					tb.RowLines = append(tb.RowLines, i+1)
				}
			}
			i--
			doc.Tables = append(doc.Tables, tb)
		}
		if trimmed != "" && directive != "" {
			return nil, fmt.Errorf("%s:%d: replay directive is not followed by a ```sh block", name, directiveLine)
		}
	}
	return doc, nil
}

func docsOnlyBlank(lines []string) bool {
	for _, l := range lines {
		if strings.TrimSpace(l) != "" {
			return false
		}
	}
	return true
}

// docsSplitRow splits a table row into trimmed cells; a pipe inside backticks
// or escaped as \| stays in its cell.
func docsSplitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(line, "|")
	line = strings.TrimSuffix(line, "|")
	var cells []string
	var cur strings.Builder
	inCode := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\' && i+1 < len(line) && line[i+1] == '|':
			cur.WriteByte('|')
			i++
		case c == '`':
			inCode = !inCode
			cur.WriteByte(c)
		case c == '|' && !inCode:
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

func docsIsSeparatorRow(cells []string) bool {
	for _, c := range cells {
		if strings.Trim(c, ":- ") != "" {
			return false
		}
	}
	return true
}

var docsCodeSpanRE = regexp.MustCompile("`([^`]+)`")

// docsCodeNames returns the `code spans` of a table cell.
func docsCodeNames(cell string) []string {
	var out []string
	for _, m := range docsCodeSpanRE.FindAllStringSubmatch(cell, -1) {
		out = append(out, m[1])
	}
	return out
}

// --- output matching ---

var docsSpaceRE = regexp.MustCompile(`\s+`)

func docsNormSpace(s string) string {
	return strings.TrimSpace(docsSpaceRE.ReplaceAllString(s, " "))
}

// docsExpectLineRE turns one expected line into an anchored pattern: literal
// text, runs of spaces as one, "..." as anything.
func docsExpectLineRE(line string) *regexp.Regexp {
	parts := strings.Split(docsNormSpace(line), "...")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
}

// docsMatchExpected checks output against an expected block and describes the
// first expected line it could not find (in order), or returns "".
func docsMatchExpected(output, expect string) string {
	var got []string
	for _, l := range strings.Split(output, "\n") {
		got = append(got, docsNormSpace(l))
	}
	next := 0
	for _, want := range strings.Split(expect, "\n") {
		// A line of "..." alone marks omitted lines, which are allowed
		// anyway.
		if w := docsNormSpace(want); w == "" || w == "..." {
			continue
		}
		re := docsExpectLineRE(want)
		found := -1
		for j := next; j < len(got); j++ {
			if re.MatchString(got[j]) {
				found = j
				break
			}
		}
		if found < 0 {
			return fmt.Sprintf("no output line (after line %d) matches %q", next, strings.TrimSpace(want))
		}
		next = found + 1
	}
	return ""
}

// --- the shell session ---

// docsShell is one bash session that runs blocks one after the other.
type docsShell struct {
	t      *testing.T
	dir    string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	exited chan struct{}
	seq    int
}

// startDocsShell starts bash in workdir with env (plus a PATH that finds
// the vault binary first). Its process group, background jobs of the
// blocks included, is killed when the test ends.
func startDocsShell(t *testing.T, workdir, vaultBin string, env []string) *docsShell {
	t.Helper()
	s := &docsShell{t: t, dir: t.TempDir(), lines: make(chan string, 16), exited: make(chan struct{})}
	cmd := exec.Command("bash", "--noprofile", "--norc")
	cmd.Dir = workdir
	home := filepath.Join(s.dir, "home")
	tmp := filepath.Join(s.dir, "tmp")
	for _, d := range []string{home, tmp} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	base := []string{}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "VAULT_") || k == "HOME" || k == "TMPDIR" || k == "PATH" || k == "BASH_ENV" || k == "ENV" {
			continue
		}
		base = append(base, kv)
	}
	cmd.Env = append(base,
		"PATH="+filepath.Dir(vaultBin)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HOME="+home, "TMPDIR="+tmp, "NO_COLOR=1", "LC_ALL=C",
	)
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errLog, err := os.Create(filepath.Join(s.dir, "bash.stderr"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = errLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	errLog.Close()
	s.cmd, s.stdin = cmd, stdin
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	go func() { _ = cmd.Wait(); close(s.exited) }()
	t.Cleanup(s.kill)
	if _, err := io.WriteString(stdin, "set -euo pipefail\n"); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *docsShell) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.stdin.Close()
	select {
	case <-s.exited:
	case <-time.After(2 * time.Second):
	}
	// Background jobs the blocks left (vault agent) share the group.
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
}

// run executes code in the session and returns its output and exit
// status. With inSubshell the code runs in a subshell (its variables do
// not persist, and a failure does not end the session). A failure outside
// a subshell ends the session: dead reports it.
func (s *docsShell) run(code string, inSubshell bool, timeout time.Duration) (out string, rc int, dead bool) {
	s.seq++
	script := filepath.Join(s.dir, fmt.Sprintf("block-%03d.sh", s.seq))
	outPath := filepath.Join(s.dir, fmt.Sprintf("block-%03d.out", s.seq))
	if err := os.WriteFile(script, []byte(code+"\n"), 0o600); err != nil {
		s.t.Fatal(err)
	}
	marker := fmt.Sprintf("__DOCS_RC_%d__", s.seq)
	var line string
	if inSubshell {
		line = fmt.Sprintf("( source %q ) </dev/null >%q 2>&1 & wait $! && __rc=0 || __rc=$?; echo %s $__rc\n", script, outPath, marker)
	} else {
		line = fmt.Sprintf("source %q </dev/null >%q 2>&1; echo %s 0\n", script, outPath, marker)
	}
	if _, err := io.WriteString(s.stdin, line); err != nil {
		data, _ := os.ReadFile(outPath)
		return string(data), -1, true
	}
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				<-s.exited
				data, _ := os.ReadFile(outPath)
				return string(data), s.cmd.ProcessState.ExitCode(), true
			}
			if rest, found := strings.CutPrefix(l, marker+" "); found {
				data, _ := os.ReadFile(outPath)
				n, _ := strconv.Atoi(strings.TrimSpace(rest))
				return string(data), n, false
			}
		case <-deadline:
			data, _ := os.ReadFile(outPath)
			s.kill()
			return string(data) + fmt.Sprintf("\n[timed out after %s]", timeout), -1, true
		}
	}
}

// --- replaying a document ---

// docsReplay describes one replay of a document.
type docsReplay struct {
	Doc      *docsDoc
	Workdir  string
	VaultBin string
	// Env is the session's environment (VAULT_ADDR, VAULT_TOKEN, ...).
	Env []string
	// Inputs are the values of variables that "replay: inputs" blocks set
	// for the reader; they are exported into the session.
	Inputs map[string]string
	// Rewrite, if set, is applied to each block and expected output before
	// it runs (e.g. the mount path).
	Rewrite func(string) string
	// BlockTimeout bounds one block (default 2 minutes).
	BlockTimeout time.Duration
}

// docsResult is the outcome of one replayed block.
type docsResult struct {
	Block  docsBlock
	Output string
	Ran    bool
}

var docsAssignRE = regexp.MustCompile(`(?m)^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=`)

// replay runs every block of the document and checks it; it stops at the
// first block that fails, since later blocks build on earlier ones.
func (r *docsReplay) replay(t *testing.T) []docsResult {
	t.Helper()
	results, err := r.run(t)
	if err != nil {
		t.Fatal(err)
	}
	return results
}

// run is replay returning the first problem instead of failing the test.
func (r *docsReplay) run(t *testing.T) ([]docsResult, error) {
	t.Helper()
	env := append([]string{}, r.Env...)
	keys := make([]string, 0, len(r.Inputs))
	for k := range r.Inputs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+r.Inputs[k])
	}
	timeout := r.BlockTimeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	sh := startDocsShell(t, r.Workdir, r.VaultBin, env)
	defer sh.kill()
	rewrite := r.Rewrite
	if rewrite == nil {
		rewrite = func(s string) string { return s }
	}
	var results []docsResult
	for _, b := range r.Doc.Blocks {
		where := fmt.Sprintf("%s:%d", r.Doc.Path, b.Line)
		switch b.Directive {
		case "skip":
			t.Logf("%s: not replayed: %s", where, b.Reason)
			results = append(results, docsResult{Block: b})
			continue
		case "inputs":
			for _, m := range docsAssignRE.FindAllStringSubmatch(b.Code, -1) {
				if _, ok := r.Inputs[m[1]]; !ok {
					return results, fmt.Errorf("%s: the inputs block sets %s, which the test does not provide", where, m[1])
				}
			}
			results = append(results, docsResult{Block: b})
			continue
		}
		start := time.Now()
		out, rc, dead := sh.run(rewrite(b.Code), b.Directive == "fails", timeout)
		t.Logf("%s: exit %d in %s", where, rc, time.Since(start).Round(time.Millisecond))
		results = append(results, docsResult{Block: b, Output: out, Ran: true})
		fail := func(format string, args ...interface{}) error {
			return fmt.Errorf("%s: %s\n--- block ---\n%s\n--- output ---\n%s", where, fmt.Sprintf(format, args...), b.Code, docsTail(out, 60))
		}
		switch {
		case b.Directive == "fails" && rc == 0:
			return results, fail("the block should fail (replay: fails) but exited 0")
		case b.Directive != "fails" && (rc != 0 || dead):
			return results, fail("the block failed (exit %d)", rc)
		}
		if b.HasExpect {
			if msg := docsMatchExpected(out, rewrite(b.Expect)); msg != "" {
				return results, fail("output does not show what the ```text block at line %d shows: %s", b.ExpectLine, msg)
			}
		}
	}
	return results, nil
}

func docsTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// docsVaultTableKeys returns the keys of the "Key Value" tables the vault CLI
// printed in out.
func docsVaultTableKeys(out string) []string {
	var keys []string
	inTable := false
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 2 && f[0] == "Key" && f[1] == "Value":
			inTable = true
		case len(f) == 2 && f[0] == "---" && f[1] == "-----":
		case len(f) == 0:
			inTable = false
		case inTable && !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "\t"):
			keys = append(keys, f[0])
		}
	}
	return keys
}
