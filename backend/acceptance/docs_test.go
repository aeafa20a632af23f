package acceptance

// docs/api.md is checked against the plugin itself, so a path, operation or
// field added without documentation (or documentation left behind by a
// removed one) fails the build:
//
//   - TestDocsAPIMatchesOpenAPI compares docs/api.md with the OpenAPI
//     document a real Vault server generates for a mount of the plugin;
//   - TestDocsAPIExamplesRun runs every example of docs/api.md against a
//     mount of that server and checks the fields the examples print against
//     the documented response fields;
//   - TestDocsOperationsRunbooksRun replays docs/operations.md on a Vault
//     server set up as its Install section says (TLS, Raft; snapshots need
//     Raft), installing release builds.
//
// The layout docs/api.md keeps for this (its introduction says so too):
//
//	### /tenants/{tenant}/roles/{role}       one section per OpenAPI path
//	| path parameter | ... |                 `name` of each path parameter
//	#### POST — ...                          one per operation: GET, LIST,
//	                                         POST, DELETE
//	| field | type | default | description | request fields, `name` first
//	| response field | type | description | response fields
//	```sh blocks                             a vault CLI and a curl example

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

const docsAPIPath = "docs/api.md"

// docsAPISection is one "### /path" section of docs/api.md.
type docsAPISection struct {
	Path       string
	Line       int
	PathParams map[string]int // name -> line
	Ops        map[string]*docsAPIOp
}

// docsAPIOp is one "#### METHOD" subsection.
type docsAPIOp struct {
	Method    string
	Line      int
	Fields    map[string]docsAPIField
	Responses map[string]int
	Blocks    []int // indexes into docsDoc.Blocks
	Text      string
}

type docsAPIField struct {
	Type, Default, Desc, Row string
	Line                     int
}

var docsMethods = map[string]bool{"GET": true, "LIST": true, "POST": true, "DELETE": true}

func docsStripTicks(s string) string { return strings.TrimSpace(strings.ReplaceAll(s, "`", "")) }

// docsAPIStructure reads the sections of docs/api.md; problems with the
// layout itself are returned as messages.
func docsAPIStructure(doc *docsDoc, raw string) (map[string]*docsAPISection, []string) {
	sections := map[string]*docsAPISection{}
	var problems []string
	var cur *docsAPISection
	var op *docsAPIOp
	lines := strings.Split(raw, "\n")
	opStart := 0
	closeOp := func(end int) {
		if op != nil {
			op.Text = strings.Join(lines[opStart:end], "\n")
		}
	}
	for _, h := range doc.Headings {
		switch {
		case h.Level <= 3:
			closeOp(h.Line - 1)
			op, cur = nil, nil
			if h.Level == 3 && strings.HasPrefix(docsStripTicks(h.Text), "/") {
				p := docsStripTicks(h.Text)
				if prev, dup := sections[p]; dup {
					problems = append(problems, fmt.Sprintf("%s:%d: second section for %s (first at line %d)", doc.Path, h.Line, p, prev.Line))
				}
				cur = &docsAPISection{Path: p, Line: h.Line, PathParams: map[string]int{}, Ops: map[string]*docsAPIOp{}}
				sections[p] = cur
			}
		case h.Level == 4 && cur != nil:
			closeOp(h.Line - 1)
			method := strings.ToUpper(strings.Fields(docsStripTicks(h.Text) + " x")[0])
			if !docsMethods[method] {
				problems = append(problems, fmt.Sprintf("%s:%d: operation heading %q under %s does not start with GET, LIST, POST or DELETE", doc.Path, h.Line, h.Text, cur.Path))
				op = nil
				continue
			}
			if _, dup := cur.Ops[method]; dup {
				problems = append(problems, fmt.Sprintf("%s:%d: second %s heading under %s", doc.Path, h.Line, method, cur.Path))
			}
			op = &docsAPIOp{Method: method, Line: h.Line, Fields: map[string]docsAPIField{}, Responses: map[string]int{}}
			cur.Ops[method] = op
			opStart = h.Line - 1
		}
	}
	closeOp(len(lines))

	opOf := func(hs [5]string) (*docsAPISection, *docsAPIOp) {
		s := sections[docsStripTicks(hs[3])]
		if s == nil || !strings.HasPrefix(docsStripTicks(hs[3]), "/") {
			return nil, nil
		}
		if hs[4] == "" {
			return s, nil
		}
		return s, s.Ops[strings.ToUpper(strings.Fields(docsStripTicks(hs[4]) + " x")[0])]
	}
	for _, tb := range doc.Tables {
		s, o := opOf(tb.Headings)
		if s == nil || len(tb.Header) == 0 {
			continue
		}
		kind := strings.ToLower(docsStripTicks(tb.Header[0]))
		for i, row := range tb.Rows {
			names := docsCodeNames(row[0])
			if len(names) == 0 && (kind == "path parameter" || kind == "field" || kind == "response field") {
				problems = append(problems, fmt.Sprintf("%s:%d: table row names no `field` in its first column", doc.Path, tb.RowLines[i]))
			}
			for _, n := range names {
				switch kind {
				case "path parameter":
					s.PathParams[n] = tb.RowLines[i]
				case "field":
					if o == nil {
						problems = append(problems, fmt.Sprintf("%s:%d: field table outside an operation of %s", doc.Path, tb.RowLines[i], s.Path))
						continue
					}
					if len(row) < 4 {
						problems = append(problems, fmt.Sprintf("%s:%d: field row needs 4 columns (field, type, default, description)", doc.Path, tb.RowLines[i]))
						continue
					}
					if _, dup := o.Fields[n]; dup {
						problems = append(problems, fmt.Sprintf("%s:%d: field %s listed twice for %s %s", doc.Path, tb.RowLines[i], n, o.Method, s.Path))
					}
					o.Fields[n] = docsAPIField{Type: row[1], Default: row[2], Desc: row[3], Row: strings.Join(row, " | "), Line: tb.RowLines[i]}
				case "response field":
					if o == nil {
						problems = append(problems, fmt.Sprintf("%s:%d: response table outside an operation of %s", doc.Path, tb.RowLines[i], s.Path))
						continue
					}
					o.Responses[n] = tb.RowLines[i]
				}
			}
		}
	}
	for i, b := range doc.Blocks {
		if _, o := opOf(b.Headings); o != nil {
			o.Blocks = append(o.Blocks, i)
		}
	}
	return sections, problems
}

// --- the server's OpenAPI ---

type oaSchema struct {
	Ref        string               `json:"$ref"`
	Type       string               `json:"type"`
	Format     string               `json:"format"`
	Properties map[string]*oaSchema `json:"properties"`
	Items      *oaSchema            `json:"items"`
	Default    interface{}          `json:"default"`
	Enum       []interface{}        `json:"enum"`
}

type oaParam struct {
	Name     string    `json:"name"`
	In       string    `json:"in"`
	Required bool      `json:"required"`
	Schema   *oaSchema `json:"schema"`
}

type oaOperation struct {
	OperationID string    `json:"operationId"`
	Parameters  []oaParam `json:"parameters"`
	RequestBody *struct {
		Content map[string]struct {
			Schema *oaSchema `json:"schema"`
		} `json:"content"`
	} `json:"requestBody"`
}

type oaPathItem struct {
	Parameters []oaParam    `json:"parameters"`
	Get        *oaOperation `json:"get"`
	Post       *oaOperation `json:"post"`
	Delete     *oaOperation `json:"delete"`
}

type oaDoc struct {
	Paths      map[string]*oaPathItem `json:"paths"`
	Components struct {
		Schemas map[string]*oaSchema `json:"schemas"`
	} `json:"components"`
}

// oaRequestName is the component name Vault gives an operation's request
// body: the operation id in CamelCase plus "Request".
func oaRequestName(opID string) string {
	var b strings.Builder
	for _, p := range strings.FieldsFunc(opID, func(r rune) bool { return r == '-' || r == '_' }) {
		b.WriteString(strings.ToUpper(p[:1]) + p[1:])
	}
	return b.String() + "Request"
}

// requestSchema resolves an operation's request body schema. The server's
// sys/internal/specs/openapi leaves the body schema empty (it drops the
// $ref that path-help carries), so the component is found by name.
func (d *oaDoc) requestSchema(op *oaOperation) (*oaSchema, error) {
	if op.RequestBody == nil {
		return nil, nil
	}
	var s *oaSchema
	for _, c := range op.RequestBody.Content {
		s = c.Schema
	}
	if s != nil && s.Ref != "" {
		name := strings.TrimPrefix(s.Ref, "#/components/schemas/")
		if c := d.Components.Schemas[name]; c != nil {
			return c, nil
		}
		return nil, fmt.Errorf("request schema %s not found", s.Ref)
	}
	if s != nil && len(s.Properties) > 0 {
		return s, nil
	}
	if c := d.Components.Schemas[oaRequestName(op.OperationID)]; c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("no request schema for operation %s (looked for %s)", op.OperationID, oaRequestName(op.OperationID))
}

// docsTypeWord is the word the type column of docs/api.md must contain for
// a field of this schema.
func docsTypeWord(s *oaSchema) string {
	switch s.Type {
	case "string":
		if s.Format == "duration" {
			return "duration"
		}
		return "string"
	case "integer", "number":
		return "integer"
	case "boolean":
		return "boolean"
	case "array":
		return "list"
	case "object":
		return "map"
	}
	return s.Type
}

func docsRenderDefault(v interface{}) string {
	switch d := v.(type) {
	case float64:
		return strconv.FormatFloat(d, 'f', -1, 64)
	case []interface{}:
		parts := make([]string, len(d))
		for i, p := range d {
			parts[i] = docsRenderDefault(p)
		}
		return strings.Join(parts, ",")
	default:
		return fmt.Sprint(d)
	}
}

// docsFetchOpenAPI reads the server's OpenAPI document and returns it with the
// paths of one mount, the mount prefix stripped ("/tenants/{tenant}").
func docsFetchOpenAPI(t *testing.T, mount string) (*oaDoc, map[string]*oaPathItem) {
	t.Helper()
	status, body, err := srv.Raw(context.Background(), http.MethodGet, "sys/internal/specs/openapi", nil)
	if err != nil || status != http.StatusOK {
		t.Fatalf("sys/internal/specs/openapi: HTTP %d, %v: %s", status, err, body)
	}
	var doc oaDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("decode OpenAPI: %v", err)
	}
	prefix := "/" + mount + "/"
	paths := map[string]*oaPathItem{}
	for p, item := range doc.Paths {
		if rest, ok := strings.CutPrefix(p, prefix); ok {
			paths["/"+rest] = item
		}
	}
	if len(paths) == 0 {
		t.Fatalf("the OpenAPI document has no path under %s", prefix)
	}
	return &doc, paths
}

var (
	docsHelpParamRE    = regexp.MustCompile(`^    ([a-z0-9_]+) \(`)
	docsPathTemplateRE = regexp.MustCompile(`\{[^}]+\}`)
)

// docsFetchHelpFields returns, per path, every field the plugin declares for
// it, from Vault's path help ("## PARAMETERS"). The OpenAPI document leaves
// out the fields of read-only paths (tenants/<t>/usage's limit, say).
func docsFetchHelpFields(t *testing.T, mount string, paths map[string]*oaPathItem) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for p := range paths {
		concrete := docsPathTemplateRE.ReplaceAllString(p, "x")
		status, body, err := srv.Raw(context.Background(), http.MethodGet, mount+concrete+"?help=1", nil)
		if err != nil || status != http.StatusOK {
			t.Fatalf("help of %s: HTTP %d, %v: %s", p, status, err, body)
		}
		var help struct {
			Help string `json:"help"`
		}
		if err := json.Unmarshal(body, &help); err != nil {
			t.Fatalf("decode help of %s: %v", p, err)
		}
		inParams := false
		for _, l := range strings.Split(help.Help, "\n") {
			if strings.HasPrefix(l, "## ") {
				inParams = l == "## PARAMETERS"
				continue
			}
			if m := docsHelpParamRE.FindStringSubmatch(l); inParams && m != nil {
				out[p] = append(out[p], m[1])
			}
		}
	}
	return out
}

// oaOps lists a path's operations the way docs/api.md names them: a GET
// that requires list=true is LIST.
func oaOps(item *oaPathItem) map[string]*oaOperation {
	ops := map[string]*oaOperation{}
	if item.Get != nil {
		method := "GET"
		for _, p := range item.Get.Parameters {
			if p.In == "query" && p.Name == "list" && p.Required {
				method = "LIST"
			}
		}
		ops[method] = item.Get
	}
	if item.Post != nil {
		ops["POST"] = item.Post
	}
	if item.Delete != nil {
		ops["DELETE"] = item.Delete
	}
	return ops
}

// docsAPIMismatches compares docs/api.md with the OpenAPI paths of a mount
// and returns every mismatch.
func docsAPIMismatches(doc *docsDoc, raw string, oa *oaDoc, paths map[string]*oaPathItem, helpFields map[string][]string) []string {
	sections, problems := docsAPIStructure(doc, raw)
	where := func(line int) string { return fmt.Sprintf("%s:%d", doc.Path, line) }

	var names []string
	for p := range paths {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		item := paths[p]
		sec := sections[p]
		if sec == nil {
			problems = append(problems, fmt.Sprintf("path %s is not documented: add a \"### %s\" section", p, p))
			continue
		}
		for _, prm := range item.Parameters {
			if prm.In == "path" {
				if _, ok := sec.PathParams[prm.Name]; !ok {
					problems = append(problems, fmt.Sprintf("%s: %s: path parameter `%s` is not in a \"path parameter\" table", where(sec.Line), p, prm.Name))
				}
			}
		}
		// Every field the path declares is named in some table of its
		// section (this catches fields of read-only paths, which the
		// OpenAPI document leaves out).
		named := map[string]bool{}
		for n := range sec.PathParams {
			named[n] = true
		}
		for _, o := range sec.Ops {
			for n := range o.Fields {
				named[n] = true
			}
		}
		for _, f := range helpFields[p] {
			if !named[f] {
				problems = append(problems, fmt.Sprintf("%s: %s: field `%s` of the path is in no path parameter or field table of the section", where(sec.Line), p, f))
			}
		}
		ops := oaOps(item)
		for _, method := range []string{"GET", "LIST", "POST", "DELETE"} {
			op, inSpec := ops[method]
			dop := sec.Ops[method]
			switch {
			case inSpec && dop == nil:
				problems = append(problems, fmt.Sprintf("%s: %s: operation %s (%s) is not documented: add a \"#### %s\" heading", where(sec.Line), p, method, op.OperationID, method))
				continue
			case !inSpec && dop != nil:
				problems = append(problems, fmt.Sprintf("%s: %s: %s is documented but the plugin has no such operation", where(dop.Line), p, method))
				continue
			case !inSpec:
				continue
			}
			// Fields the operation takes: query parameters, body properties.
			want := map[string]*oaSchema{}
			for _, prm := range op.Parameters {
				if prm.In == "query" && prm.Name != "list" {
					want[prm.Name] = prm.Schema
				}
			}
			if method == "POST" {
				body, err := oa.requestSchema(op)
				if err != nil {
					problems = append(problems, fmt.Sprintf("%s: %s POST: %v", where(dop.Line), p, err))
				}
				if body != nil {
					for n, s := range body.Properties {
						want[n] = s
					}
				}
			}
			var fields []string
			for n := range want {
				fields = append(fields, n)
			}
			sort.Strings(fields)
			for _, n := range fields {
				s := want[n]
				f, ok := dop.Fields[n]
				if !ok {
					problems = append(problems, fmt.Sprintf("%s: %s %s: field `%s` is not in the operation's field table", where(dop.Line), method, p, n))
					continue
				}
				if s == nil {
					continue
				}
				if w := docsTypeWord(s); !strings.Contains(strings.ToLower(f.Type), w) {
					problems = append(problems, fmt.Sprintf("%s: %s %s: field `%s` has type %q in the plugin (%s/%s), the doc says %q", where(f.Line), method, p, n, w, s.Type, s.Format, f.Type))
				}
				if s.Default != nil {
					if d := docsRenderDefault(s.Default); !strings.Contains(docsStripTicks(f.Default), d) {
						problems = append(problems, fmt.Sprintf("%s: %s %s: field `%s` defaults to %s in the plugin, the doc's default column says %q", where(f.Line), method, p, n, d, f.Default))
					}
				}
				for _, e := range s.Enum {
					if v := docsRenderDefault(e); !strings.Contains(f.Row, v) {
						problems = append(problems, fmt.Sprintf("%s: %s %s: field `%s` allows %q, which its row does not mention", where(f.Line), method, p, n, v))
					}
				}
			}
			// A body field documented for POST that the plugin does not take.
			if method == "POST" {
				for n, f := range dop.Fields {
					if _, ok := want[n]; !ok {
						problems = append(problems, fmt.Sprintf("%s: POST %s: field `%s` is documented but the plugin does not take it", where(f.Line), p, n))
					}
				}
			}
			// Examples: a vault CLI and a curl example each.
			hasVault, hasCurl := false, false
			for _, bi := range dop.Blocks {
				code := doc.Blocks[bi].Code
				hasVault = hasVault || regexp.MustCompile(`(?m)(^|[\s$(])vault\s`).MatchString(code)
				hasCurl = hasCurl || strings.Contains(code, "curl ")
			}
			if !hasCurl {
				problems = append(problems, fmt.Sprintf("%s: %s %s has no curl example", where(dop.Line), method, p))
			}
			if !hasVault && !strings.Contains(dop.Text, "vault CLI cannot") {
				problems = append(problems, fmt.Sprintf("%s: %s %s has no vault CLI example (or a note that the vault CLI cannot)", where(dop.Line), method, p))
			}
		}
	}
	var docPaths []string
	for p := range sections {
		docPaths = append(docPaths, p)
	}
	sort.Strings(docPaths)
	for _, p := range docPaths {
		if paths[p] == nil {
			problems = append(problems, fmt.Sprintf("%s: %s is documented but the plugin has no such path", where(sections[p].Line), p))
		}
	}
	return problems
}

func TestDocsAPIMatchesOpenAPI(t *testing.T) {
	mount := newMount(t)
	oa, paths := docsFetchOpenAPI(t, mount)
	helpFields := docsFetchHelpFields(t, mount, paths)
	doc := docsRead(t, docsAPIPath)
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), docsAPIPath))
	if err != nil {
		t.Fatal(err)
	}
	if problems := docsAPIMismatches(doc, string(raw), oa, paths, helpFields); len(problems) > 0 {
		t.Errorf("%s does not match the plugin (%d paths in its OpenAPI); %d problems:\n  %s",
			docsAPIPath, len(paths), len(problems), strings.Join(problems, "\n  "))
	} else {
		t.Logf("%s documents all %d paths of the plugin's OpenAPI", docsAPIPath, len(paths))
	}

	// The comparison can fail: each change below, made to the real
	// document, must be reported.
	cases := []struct {
		name, from, to, want string
	}{
		{"field removed", "| `max_keys` |", "| max keys |", "field `max_keys` is not in the operation's field table"},
		{"query field removed", "| `limit` |", "| limit |", "field `limit` of the path is in no path parameter or field table"},
		{"path parameter removed", "| `key_id` | id of the key", "| key id | id of the key", "path parameter `key_id`"},
		{"operation removed", "#### DELETE — delete a tenant", "#### Removal", "operation DELETE"},
		{"path removed", "### /tidy/status", "### tidy status", "path /tidy/status is not documented"},
		{"path invented", "### /tidy/status", "### /tidy/history\n\n#### GET\n\n### /tidy/status", "/tidy/history is documented but the plugin has no such path"},
		{"field invented", "| `max_keys` | integer", "| `max_key_count` | integer | | |\n| `max_keys` | integer", "field `max_key_count` is documented but the plugin does not take it"},
		{"wrong type", "| `max_keys` | integer", "| `max_keys` | string", "field `max_keys` has type \"integer\""},
		{"wrong default", "| `batch_size` | integer | `500`", "| `batch_size` | integer | `50`", "field `batch_size` defaults to 500"},
	}
	for _, c := range cases {
		t.Run("catches "+c.name, func(t *testing.T) {
			if !strings.Contains(string(raw), c.from) {
				t.Fatalf("%s no longer contains %q: update this test", docsAPIPath, c.from)
			}
			text := strings.Replace(string(raw), c.from, c.to, 1)
			doc, err := docsParse(docsAPIPath, text)
			if err != nil {
				t.Fatal(err)
			}
			problems := docsAPIMismatches(doc, text, oa, paths, helpFields)
			if joined := strings.Join(problems, "\n"); !strings.Contains(joined, c.want) {
				t.Fatalf("want a problem mentioning %q, got:\n%s", c.want, joined)
			}
		})
	}
}

// TestDocsAPIExamplesRun replays docs/api.md on a fresh mount of the shared
// server (apikeys/ in the examples becomes the mount) and checks that every
// field the vault CLI examples print is in the operation's response table.
func TestDocsAPIExamplesRun(t *testing.T) {
	mount := newMount(t)
	doc := docsRead(t, docsAPIPath)
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), docsAPIPath))
	if err != nil {
		t.Fatal(err)
	}
	sections, problems := docsAPIStructure(doc, string(raw))
	if len(problems) > 0 {
		t.Fatalf("layout of %s:\n  %s", docsAPIPath, strings.Join(problems, "\n  "))
	}
	mountRE := regexp.MustCompile(`(^|[^A-Za-z0-9_.-])apikeys/`)
	r := &docsReplay{
		Doc:      doc,
		Workdir:  t.TempDir(),
		VaultBin: srv.VaultBin,
		Env:      []string{"VAULT_ADDR=" + srv.Addr, "VAULT_TOKEN=" + srv.Token},
		Rewrite:  func(s string) string { return mountRE.ReplaceAllString(s, "${1}"+mount+"/") },
	}
	results := r.replay(t)

	// The first block of each operation is its vault CLI example: every
	// key it prints must be a documented response field.
	var missing []string
	for _, sec := range sections {
		for _, op := range sec.Ops {
			if len(op.Blocks) == 0 {
				continue
			}
			res := results[op.Blocks[0]]
			if !res.Ran {
				continue
			}
			for _, k := range docsVaultTableKeys(res.Output) {
				if strings.HasPrefix(k, "lease_") {
					continue
				}
				if _, ok := op.Responses[k]; !ok {
					missing = append(missing, fmt.Sprintf("%s:%d: %s %s returns `%s`, which its response field table does not list", docsAPIPath, op.Line, op.Method, sec.Path, k))
				}
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("undocumented response fields:\n  %s", strings.Join(missing, "\n  "))
	}
}

// TestDocsOperationsRunbooksRun replays docs/operations.md on a Vault
// server of its own, set up as its Install section says (TLS, Raft) and
// left uninitialized: the page initializes and unseals it, installs the
// release builds of v0.1.0 and v0.2.0 from their SHA256SUMS, enables an
// audit device, sets quotas and takes and restores snapshots, none of
// which may touch the shared server.
func TestDocsOperationsRunbooksRun(t *testing.T) {
	ctx := context.Background()
	v1 := release(t, "v0.1.0")
	release(t, "v0.2.0") // the upgrade runbook's
	p, err := testvault.StartProduction(ctx, testvault.ProductionOptions{Log: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Cleanup)
	docsSameVaultConfig(t, "docs/operations.md", p.ConfigPath)
	work := t.TempDir()
	r := &docsReplay{
		Doc:      docsRead(t, "docs/operations.md"),
		Workdir:  repoRoot(t),
		VaultBin: p.VaultBin,
		Env:      []string{"VAULT_ADDR=" + p.Addr, "VAULT_CACERT=" + p.CACert},
		Inputs: map[string]string{
			"RELEASES":       filepath.Dir(v1.Dir),
			"PLATFORM":       strings.ReplaceAll(testvault.HostPlatform(), "/", "_"),
			"PLUGIN_DIR":     p.PluginDir,
			"PLUGIN_VERSION": v1.Version,
			"BACKUP_DIR":     filepath.Join(work, "backups"),
			"AUDIT_LOG":      filepath.Join(work, "audit.log"),
		},
	}
	if _, err := r.run(t); err != nil {
		t.Fatalf("%v\n--- vault server log (tail) ---\n%s", err, p.LogTail(40))
	}
}

// docsSameVaultConfig wants the ```hcl block of a document to set what
// the config file the test's server runs sets: the same blocks and
// settings, whatever their values (addresses and paths differ).
func docsSameVaultConfig(t *testing.T, rel, configPath string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```hcl\n(.*?)```").FindAllStringSubmatch(string(raw), -1)
	if len(m) != 1 {
		t.Fatalf("%s: want one ```hcl block (Vault's configuration), found %d", rel, len(m))
	}
	cfg, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatal(err)
	}
	settings := func(hcl string) string {
		var out []string
		block := ""
		for _, line := range strings.Split(hcl, "\n") {
			line, _, _ = strings.Cut(line, "#")
			f := strings.Fields(line)
			switch {
			case len(f) == 0:
			case f[len(f)-1] == "{":
				block = strings.Join(f[:len(f)-1], " ") + "."
			case f[0] == "}":
				block = ""
			case len(f) > 1 && f[1] == "=":
				out = append(out, block+f[0])
			}
		}
		sort.Strings(out)
		return strings.Join(out, " ")
	}
	if doc, test := settings(m[0][1]), settings(string(cfg)); doc != test {
		t.Fatalf("%s's Vault configuration sets\n  %s\nthe test's server (testvault.StartProduction) sets\n  %s", rel, doc, test)
	}
}

// TestDocsReplayerCatchesMistakes proves the replayer that keeps
// docs/tutorial.md and the examples true can fail: each document below
// breaks one rule and must be refused, and a correct one must pass.
func TestDocsReplayerCatchesMistakes(t *testing.T) {
	fence := "```"
	block := func(directive, code, expect string) string {
		s := ""
		if directive != "" {
			s += "<!-- replay: " + directive + " -->\n"
		}
		s += fence + "sh\n" + code + "\n" + fence + "\n"
		if expect != "" {
			s += "\n" + fence + "text\n" + expect + "\n" + fence + "\n"
		}
		return s + "\nSome prose.\n\n"
	}
	good := block("inputs", "export GREETING=hello", "") +
		block("", `NAME=world
echo "$GREETING,   $NAME"
printf 'Key   Value\n---   -----\nkey_id    1234-abcd\n'`, "hello, world\n...\nkey_id ...-abcd") +
		block("fails", "echo refused >&2; false", "refused") +
		block("skip because it cannot run here", "exit 1", "") +
		block("", `echo "still $NAME"`, "still world")
	cases := []struct {
		name, doc, want string
	}{
		{"a correct document", good, ""},
		{"wrong output", block("", "echo hello", "goodbye"), `no output line (after line 0) matches "goodbye"`},
		{"output out of order", block("", "echo one; echo two", "two\none"), `matches "one"`},
		{"a failing command", block("", "echo first; false; echo never", "first"), "the block failed"},
		{"a failure in a pipeline", block("", "false | cat", ""), "the block failed"},
		{"an unset variable", block("", `echo "$NOT_SET_ANYWHERE"`, ""), "the block failed"},
		{"a block that should fail but does not", block("fails", "true", ""), "should fail"},
		{"an input the test does not provide", block("inputs", "export SECRET_PATH=/x", ""), "SECRET_PATH, which the test does not provide"},
		{"stdin is not the session", block("", "cat; echo done", "done"), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc, err := docsParse("case.md", c.doc)
			if err != nil {
				t.Fatal(err)
			}
			r := &docsReplay{
				Doc: doc, Workdir: t.TempDir(), VaultBin: srv.VaultBin,
				Inputs: map[string]string{"GREETING": "hello"}, BlockTimeout: 20 * time.Second,
			}
			_, err = r.run(t)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("want success, got: %v", err)
			case c.want != "" && err == nil:
				t.Fatalf("want a failure mentioning %q, got success", c.want)
			case c.want != "" && !strings.Contains(err.Error(), c.want):
				t.Fatalf("want a failure mentioning %q, got: %v", c.want, err)
			}
		})
	}
	for _, bad := range []string{"<!-- replay: skip -->\n" + fence + "sh\ntrue\n" + fence + "\n", "<!-- replay: later -->\n" + fence + "sh\ntrue\n" + fence + "\n", "<!-- replay: fails -->\nprose\n" + fence + "sh\ntrue\n" + fence + "\n"} {
		if _, err := docsParse("bad.md", bad); err == nil {
			t.Errorf("docsParse accepted a bad directive:\n%s", bad)
		}
	}
}

var (
	docsLinkRE     = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	docsSlugDropRE = regexp.MustCompile(`[^\p{L}\p{N} _-]`)
)

// docsGithubSlug is the anchor GitHub gives a heading.
func docsGithubSlug(heading string) string {
	s := strings.ToLower(strings.TrimSpace(heading))
	s = docsSlugDropRE.ReplaceAllString(s, "")
	return strings.ReplaceAll(s, " ", "-")
}

// TestDocsLinksResolve checks that every relative link of the documents
// this suite keeps (and of the README's and changelog's) points at a file
// that exists, and at a heading that exists when it names one.
func TestDocsLinksResolve(t *testing.T) {
	for heading, want := range map[string]string{
		"1. Install the engine (operator)": "1-install-the-engine-operator",
		"`config/monitoring`":              "configmonitoring",
		"/tenants/{tenant}/roles/{role}":   "tenantstenantrolesrole",
		"GET — read a tenant":              "get--read-a-tenant",
	} {
		if got := docsGithubSlug(heading); got != want {
			t.Errorf("docsGithubSlug(%q) = %q, want %q", heading, got, want)
		}
	}
	root := repoRoot(t)
	anchors := map[string]map[string]bool{}
	anchorsOf := func(path string) map[string]bool {
		if a, ok := anchors[path]; ok {
			return a
		}
		a := map[string]bool{}
		data, err := os.ReadFile(path)
		if err == nil {
			if doc, err := docsParse(path, string(data)); err == nil {
				seen := map[string]int{}
				for _, h := range doc.Headings {
					slug := docsGithubSlug(h.Text)
					if n := seen[slug]; n > 0 {
						a[fmt.Sprintf("%s-%d", slug, n)] = true
					} else {
						a[slug] = true
					}
					seen[slug]++
				}
			}
		}
		anchors[path] = a
		return a
	}
	var problems []string
	for _, rel := range []string{"docs/api.md", "docs/operations.md", "docs/tutorial.md", "docs/architecture.md", "docs/CHANGELOG.md", "README.md"} {
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		inCode := false
		for i, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "```") {
				inCode = !inCode
				continue
			}
			if inCode {
				continue
			}
			for _, m := range docsLinkRE.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				file, anchor, _ := strings.Cut(target, "#")
				path := filepath.Join(root, rel)
				if file != "" {
					path = filepath.Join(filepath.Dir(path), file)
				}
				if _, err := os.Stat(path); err != nil {
					problems = append(problems, fmt.Sprintf("%s:%d: link %s: no such file", rel, i+1, target))
					continue
				}
				if anchor != "" && strings.HasSuffix(path, ".md") && !anchorsOf(path)[anchor] {
					problems = append(problems, fmt.Sprintf("%s:%d: link %s: no such heading", rel, i+1, target))
				}
			}
		}
	}
	if len(problems) > 0 {
		t.Fatalf("broken links:\n  %s", strings.Join(problems, "\n  "))
	}
}
