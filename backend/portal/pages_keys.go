package portal

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

var keysNav = &navEntry{
	title: "Keys", href: "/keys", order: 10,
	needs: []capCheck{{"{mount}/tenants/{tenant}/keys/", "list"}},
}

func init() {
	registerPage(page{
		routes: map[string]pageFunc{
			"GET /keys":                  (*Server).keysPage,
			"GET /keys/{key_id}":         (*Server).keyPage,
			"POST /keys/{key_id}/status": (*Server).keyStatus,
			"GET /keys/{key_id}/revoke":  (*Server).keyRevokeConfirm,
			"POST /keys/{key_id}/revoke": (*Server).keyRevoke,
		},
		nav: keysNav,
	})
}

var keyIDRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// probeKeyID stands for "any key" in capability checks of keys/<key_id>
// paths: the policies grant keys/+, the same for every key.
const probeKeyID = "00000000-0000-0000-0000-000000000000"

// Filtering runs on the list's key_info, which costs Vault two storage
// reads per key (~0.2 s per 1000 keys on the 2-core test machine): a
// filtered page reads at most filterBudget keys' info, filterChunk at a
// time, and offers to scan on from where it stopped.
const (
	filterChunk  = 500 // the largest info read of one round trip
	filterBudget = 1000
	// keyReadWorkers read the shown keys' full records (environment, last
	// use, quota) side by side.
	keyReadWorkers = 8
)

type keyRow struct {
	ID, Hint, Name, Role, Kind, Environment string
	Created, Expires, LastUsed, Status      string
	Verifies                                string
	Quota                                   string
}

type keysFilter struct {
	Status, Role, Name string
}

func (f keysFilter) active() bool { return f.Status != "" || f.Role != "" || f.Name != "" }

func (f keysFilter) match(info map[string]interface{}) bool {
	if f.Status != "" && str(info, "status") != f.Status {
		return false
	}
	if f.Role != "" && str(info, "role") != f.Role {
		return false
	}
	if f.Name != "" && !strings.Contains(strings.ToLower(str(info, "name")), strings.ToLower(f.Name)) {
		return false
	}
	return true
}

type keysData struct {
	Filter        keysFilter
	Filtered      bool
	Statuses      []string
	Rows          []keyRow
	Total         int
	From, To      int
	Scanned       int
	NextURL       string
	PrevURL       string
	FirstURL      string
	CanIssue      bool
	QuotaReadable bool
}

var keyStatuses = []string{"active", "disabled", "in_grace", "expired"}

func (s *Server) keysPage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	if !rc.require(w, r, keysNav) {
		return
	}
	q := r.URL.Query()
	f := keysFilter{Status: q.Get("status"), Role: q.Get("role"), Name: strings.TrimSpace(q.Get("name"))}
	if f.Status != "" && !contains(keyStatuses, f.Status) {
		s.message(w, r, rc, http.StatusBadRequest, "Bad filter", "status must be one of "+strings.Join(keyStatuses, ", ")+".")
		return
	}
	if f.Role != "" && !nameRE.MatchString(f.Role) {
		s.message(w, r, rc, http.StatusBadRequest, "Bad filter", "role must be a role name.")
		return
	}
	if len(f.Name) > 128 {
		s.message(w, r, rc, http.StatusBadRequest, "Bad filter", "name must be at most 128 characters.")
		return
	}
	after := q.Get("after")
	if after != "" && !keyIDRE.MatchString(after) {
		s.message(w, r, rc, http.StatusBadRequest, "Bad page", "after must be a key id.")
		return
	}
	ctx := r.Context()
	d := keysData{Filter: f, Filtered: f.active(), Statuses: keyStatuses}
	size := s.cfg.PageSize
	// A filtered page starts with a small info read and doubles it up to
	// filterChunk, so a common match costs little and a rare one is found
	// in few round trips.
	chunk := size
	if f.active() {
		chunk = min(2*size, filterChunk)
	}
	var (
		ids     []string
		shown   []string
		infos   = map[string]map[string]interface{}{}
		cursor  = after
		more    bool
		startAt int
	)
	for first := true; ; first = false {
		// GET with list=true is Vault's LIST, with query parameters.
		sec, err := rc.vault.Logical().ReadWithDataWithContext(ctx, rc.path("keys/"), url.Values{
			"list": {"true"}, "after": {cursor}, "limit": {strconv.Itoa(chunk)},
			// Each key's use costs the plugin one more read: worth it for a
			// page of rows, not for a filter's scan of up to filterChunk
			// keys (keyRow reads the few it shows).
			"usage": {strconv.FormatBool(!f.active())},
		})
		if err != nil {
			s.vaultError(w, r, rc, err)
			return
		}
		if sec == nil {
			break // no keys at all
		}
		ids = stringList(sec.Data["keys"])
		info, _ := sec.Data["key_info"].(map[string]interface{})
		from := sort.SearchStrings(ids, cursor)
		if from < len(ids) && ids[from] == cursor {
			from++
		}
		if first {
			startAt = from
		}
		end := min(len(ids), from+chunk)
		for i := from; i < end; i++ {
			d.Scanned++
			m, _ := info[ids[i]].(map[string]interface{})
			if m == nil {
				m = map[string]interface{}{}
			}
			cursor = ids[i]
			if !f.active() || f.match(m) {
				shown = append(shown, ids[i])
				infos[ids[i]] = m
				if len(shown) == size {
					break
				}
			}
		}
		more = cursor != "" && sort.SearchStrings(ids, cursor) < len(ids)-1
		if !f.active() || len(shown) == size || !more || d.Scanned >= filterBudget {
			break
		}
		chunk = min(2*chunk, filterChunk, filterBudget-d.Scanned)
	}
	d.Total = len(ids)
	if !f.active() {
		d.From, d.To = startAt+1, startAt+len(shown)
		if startAt > 0 {
			d.FirstURL = "/keys"
			prev := startAt - size
			if prev <= 0 {
				d.PrevURL = "/keys"
			} else {
				d.PrevURL = "/keys?" + url.Values{"after": {ids[prev-1]}}.Encode()
			}
		}
	} else if after != "" {
		d.FirstURL = "/keys?" + f.query(url.Values{}).Encode()
	}
	if more {
		d.NextURL = "/keys?" + f.query(url.Values{"after": {cursor}}).Encode()
	}
	quotaPath := rc.path("keys/" + probeKeyID + "/quota")
	d.QuotaReadable = rc.can(ctx, quotaPath, "read")
	d.CanIssue = rc.allowed(ctx, issueNav)
	d.Rows = rc.keyRows(ctx, shown, infos, d.QuotaReadable)
	s.render(w, r, rc, "keys.html", "Keys", http.StatusOK, d)
}

func (f keysFilter) query(v url.Values) url.Values {
	if f.Status != "" {
		v.Set("status", f.Status)
	}
	if f.Role != "" {
		v.Set("role", f.Role)
	}
	if f.Name != "" {
		v.Set("name", f.Name)
	}
	return v
}

// keyRows builds the shown keys' rows from their list info, reading a
// key's record for its use (last use, verify count) when the list did not
// hold it (a filtered page), and its quota when the policy lets the user
// read it. A key whose read fails is shown with what the list said.
func (rc *reqCtx) keyRows(ctx context.Context, ids []string, infos map[string]map[string]interface{}, withQuota bool) []keyRow {
	rows := make([]keyRow, len(ids))
	each(len(ids), func(i int) { rows[i] = rc.keyRow(ctx, ids[i], infos[ids[i]], withQuota) }, func(i int, err error) {
		rc.s.log.Error("key row", "key_id", ids[i], "error", err)
		rows[i] = keyRow{ID: ids[i], Status: "unknown"}
	})
	return rows
}

func (rc *reqCtx) keyRow(ctx context.Context, id string, info map[string]interface{}, withQuota bool) keyRow {
	row := keyRow{
		ID: id, Hint: str(info, "hint"), Name: str(info, "name"), Role: str(info, "role"), Kind: str(info, "kind"),
		Created: fmtTime(str(info, "created_at")), Expires: fmtTime(str(info, "expires_at")), Status: str(info, "status"),
		Environment: "–", LastUsed: "–", Verifies: "–", Quota: "–",
	}
	use := info
	if _, listed := info["verify_count"]; !listed {
		use = nil
		if sec, err := rc.vault.Logical().ReadWithContext(ctx, rc.path("keys/"+id)); err == nil && sec != nil {
			use = sec.Data
		}
	}
	row.Environment = orDash(str(info, "environment"))
	row.LastUsed = fmtTime(str(use, "last_used_at"))
	row.Verifies = orDash(str(use, "verify_count"))
	if withQuota {
		row.Quota = rc.quotaUse(ctx, id)
	}
	return row
}

// quotaUse is "used / quota" of a key, "none" without a quota.
func (rc *reqCtx) quotaUse(ctx context.Context, id string) string {
	sec, err := rc.vault.Logical().ReadWithContext(ctx, rc.path("keys/"+id+"/quota"))
	if err != nil || sec == nil {
		return "–"
	}
	quota := str(sec.Data, "quota")
	if quota == "" || quota == "0" {
		return "none"
	}
	return fmt.Sprintf("%s / %s per %s", orDash(str(sec.Data, "used")), quota, str(sec.Data, "quota_period"))
}

type keyData struct {
	Key       map[string]interface{}
	ID        string
	Scopes    string
	Metadata  []kv
	Times     map[string]string
	CanUpdate bool
	CanRevoke bool
	Disabled  bool
}

type kv struct{ K, V string }

// keyID is the path's key id, or a 400 page.
func (s *Server) keyID(w http.ResponseWriter, r *http.Request, rc *reqCtx) (string, bool) {
	id := r.PathValue("key_id")
	if !keyIDRE.MatchString(id) {
		s.message(w, r, rc, http.StatusBadRequest, "Bad request", "key_id must be a key id (a UUID).")
		return "", false
	}
	return id, rc.require(w, r, keysNav)
}

func (s *Server) readKey(w http.ResponseWriter, r *http.Request, rc *reqCtx, id string) (*api.Secret, bool) {
	sec, err := rc.vault.Logical().ReadWithContext(r.Context(), rc.path("keys/"+id))
	if err != nil {
		s.vaultError(w, r, rc, err)
		return nil, false
	}
	if sec == nil {
		s.message(w, r, rc, http.StatusNotFound, "Not found", "Your tenant has no such key.")
		return nil, false
	}
	return sec, true
}

func (s *Server) keyPage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	id, ok := s.keyID(w, r, rc)
	if !ok {
		return
	}
	sec, ok := s.readKey(w, r, rc, id)
	if !ok {
		return
	}
	p := rc.path("keys/" + id)
	caps := rc.capabilities(r.Context(), p)[p]
	d := keyData{
		Key: sec.Data, ID: id, Scopes: strings.Join(stringList(sec.Data["scopes"]), ", "),
		Times: map[string]string{}, CanUpdate: hasCap(caps, "update"), CanRevoke: hasCap(caps, "delete"),
		Disabled: str(sec.Data, "status") == "disabled",
	}
	for _, k := range []string{"created_at", "expires_at", "updated_at", "last_used_at"} {
		d.Times[k] = fmtTime(str(sec.Data, k))
	}
	if md, ok := sec.Data["metadata"].(map[string]interface{}); ok {
		for k := range md {
			d.Metadata = append(d.Metadata, kv{k, str(md, k)})
		}
		sort.Slice(d.Metadata, func(i, j int) bool { return d.Metadata[i].K < d.Metadata[j].K })
	}
	s.render(w, r, rc, "key.html", "Key "+str(sec.Data, "hint"), http.StatusOK, d)
}

func (s *Server) keyStatus(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	id, ok := s.keyID(w, r, rc)
	if !ok {
		return
	}
	status := r.PostForm.Get("status")
	if status != "active" && status != "disabled" {
		s.message(w, r, rc, http.StatusBadRequest, "Bad request", `status must be "active" or "disabled".`)
		return
	}
	if _, err := rc.vault.Logical().WriteWithContext(r.Context(), rc.path("keys/"+id), map[string]interface{}{"status": status}); err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	if status == "disabled" {
		rc.sess.setFlash("Key disabled: it verifies as DISABLED until you enable it again.")
	} else {
		rc.sess.setFlash("Key enabled.")
	}
	http.Redirect(w, r, "/keys/"+id, http.StatusSeeOther)
}

func (s *Server) keyRevokeConfirm(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	id, ok := s.keyID(w, r, rc)
	if !ok {
		return
	}
	sec, ok := s.readKey(w, r, rc, id)
	if !ok {
		return
	}
	s.render(w, r, rc, "revoke.html", "Revoke key", http.StatusOK, keyData{Key: sec.Data, ID: id})
}

func (s *Server) keyRevoke(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	id, ok := s.keyID(w, r, rc)
	if !ok {
		return
	}
	// Read first: Vault answers a delete of an unknown key with success,
	// and the user should hear that there was no such key.
	if _, ok := s.readKey(w, r, rc, id); !ok {
		return
	}
	if _, err := rc.vault.Logical().DeleteWithContext(r.Context(), rc.path("keys/"+id)); err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	rc.sess.setFlash("Key revoked: it no longer verifies.")
	http.Redirect(w, r, "/keys", http.StatusSeeOther)
}

// fmtTime shows an RFC 3339 time in UTC to the minute; "–" for none.
func fmtTime(v string) string {
	if v == "" {
		return "–"
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return v
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

func orDash(v string) string {
	if v == "" {
		return "–"
	}
	return v
}

func contains(l []string, v string) bool {
	for _, x := range l {
		if x == v {
			return true
		}
	}
	return false
}
