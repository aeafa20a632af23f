package portal

import (
	"context"
	"net/http"
	"sort"
	"strconv"
	"time"
)

// staticNav is for tenant admins: the developer policy grants no
// static-keys path (static keys are long-lived service keys).
var staticNav = &navEntry{
	title: "Static keys", href: "/static-keys", order: 30,
	needs: []capCheck{{"{mount}/tenants/{tenant}/static-keys/", "list"}},
}

func init() {
	registerPage(page{
		routes: map[string]pageFunc{
			"GET /static-keys":                (*Server).staticKeysPage,
			"GET /static-keys/{name}":         (*Server).staticKeyPage,
			"GET /static-keys/{name}/rotate":  (*Server).staticRotateConfirm,
			"POST /static-keys/{name}/rotate": (*Server).staticRotate,
		},
		nav: staticNav,
	})
}

// probeStaticName stands for "any static key" in capability checks: the
// policies grant static-keys/+ and static-keys/+/rotate alike for all.
const probeStaticName = "probe"

type staticRow struct {
	Name, Role, Environment, Hint, KeyID, Status string
	Rotation, Grace, LastRotated, NextRotation   string
	PreviousKeyID, PreviousUntil                 string
	Read                                         bool
}

type staticListData struct {
	Rows []staticRow
	pager
}

// staticView is one static key's record as the pages show it.
func staticView(name string, d map[string]interface{}) staticRow {
	v := staticRow{
		Name: name, Role: str(d, "role"), Environment: str(d, "environment"), Hint: str(d, "hint"),
		KeyID: str(d, "key_id"), Status: "active", Grace: seconds(str(d, "grace_period")),
		LastRotated: fmtTime(str(d, "last_rotated")), NextRotation: fmtTime(str(d, "next_rotation")),
		PreviousKeyID: str(d, "previous_key_id"), PreviousUntil: fmtTime(str(d, "previous_key_expires_at")),
		Read: true,
	}
	if v.NextRotation == "–" {
		// static-creds and rotate answer ttl (seconds to the next
		// rotation) rather than next_rotation.
		if n, err := strconv.ParseInt(str(d, "ttl"), 10, 64); err == nil {
			v.NextRotation = fmtTime(time.Now().Add(time.Duration(n) * time.Second).UTC().Format(time.RFC3339))
		}
	}
	if str(d, "disabled") == "true" {
		v.Status = "disabled"
	}
	if sch := str(d, "rotation_schedule"); sch != "" {
		v.Rotation = "schedule " + sch + " (UTC)"
	} else {
		v.Rotation = "every " + seconds(str(d, "rotation_period"))
	}
	if v.Grace == "default" {
		v.Grace = "none"
	}
	return v
}

// staticKeysPage lists one page of the tenant's static keys: the list
// answers names only, so only the shown page's records are read (side by
// side, as the keys page does).
func (s *Server) staticKeysPage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	if !rc.require(w, r, staticNav) {
		return
	}
	after := r.URL.Query().Get("after")
	if after != "" && !nameRE.MatchString(after) {
		s.message(w, r, rc, http.StatusBadRequest, "Bad page", "after must be a static key name.")
		return
	}
	ctx := r.Context()
	sec, err := rc.vault.Logical().ListWithContext(ctx, rc.path("static-keys/"))
	if err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	var names []string
	if sec != nil {
		names = stringList(sec.Data["keys"])
	}
	shown, pg := pageOf(names, after, s.cfg.PageSize, "/static-keys")
	d := staticListData{Rows: rc.staticRows(ctx, shown), pager: pg}
	s.render(w, r, rc, "static_keys.html", "Static keys", http.StatusOK, d)
}

func (rc *reqCtx) staticRows(ctx context.Context, names []string) []staticRow {
	rows := make([]staticRow, len(names))
	// A key whose read fails is shown by name only: the page still lists it.
	byName := func(i int) {
		rows[i] = staticRow{Name: names[i], Status: "–", Rotation: "–", Grace: "–", LastRotated: "–", NextRotation: "–"}
	}
	each(len(names), func(i int) {
		sec, err := rc.vault.Logical().ReadWithContext(ctx, rc.path("static-keys/"+names[i]))
		if err != nil || sec == nil {
			byName(i)
			return
		}
		rows[i] = staticView(names[i], sec.Data)
	}, func(i int, err error) {
		rc.s.log.Error("static key row", "name", names[i], "error", err)
		byName(i)
	})
	return rows
}

type staticKeyData struct {
	staticRow
	Metadata  []kv
	Created   string
	CanRotate bool
}

// staticName is the path's static key name, or a 400 page; it also checks
// the page is the user's to see.
func (s *Server) staticName(w http.ResponseWriter, r *http.Request, rc *reqCtx) (string, bool) {
	name := r.PathValue("name")
	if !nameRE.MatchString(name) {
		s.message(w, r, rc, http.StatusBadRequest, "Bad request", "name must be a static key name (lower-case letters, digits and dashes).")
		return "", false
	}
	return name, rc.require(w, r, staticNav)
}

func (s *Server) readStatic(w http.ResponseWriter, r *http.Request, rc *reqCtx, name string) (staticKeyData, bool) {
	sec, err := rc.vault.Logical().ReadWithContext(r.Context(), rc.path("static-keys/"+name))
	if err != nil {
		s.vaultError(w, r, rc, err)
		return staticKeyData{}, false
	}
	if sec == nil {
		s.message(w, r, rc, http.StatusNotFound, "Not found", "Your tenant has no such static key.")
		return staticKeyData{}, false
	}
	d := staticKeyData{staticRow: staticView(name, sec.Data), Created: fmtTime(str(sec.Data, "created_at"))}
	if md, ok := sec.Data["metadata"].(map[string]interface{}); ok {
		for k := range md {
			d.Metadata = append(d.Metadata, kv{k, str(md, k)})
		}
		sort.Slice(d.Metadata, func(i, j int) bool { return d.Metadata[i].K < d.Metadata[j].K })
	}
	return d, true
}

func (rc *reqCtx) canRotate(ctx context.Context, name string) bool {
	return rc.can(ctx, rc.path("static-keys/"+name+"/rotate"), "update")
}

func (s *Server) staticKeyPage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	name, ok := s.staticName(w, r, rc)
	if !ok {
		return
	}
	d, ok := s.readStatic(w, r, rc, name)
	if !ok {
		return
	}
	d.CanRotate = rc.canRotate(r.Context(), probeStaticName)
	s.render(w, r, rc, "static_key.html", "Static key "+name, http.StatusOK, d)
}

func (s *Server) staticRotateConfirm(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	name, ok := s.staticName(w, r, rc)
	if !ok {
		return
	}
	d, ok := s.readStatic(w, r, rc, name)
	if !ok {
		return
	}
	if !rc.canRotate(r.Context(), probeStaticName) {
		s.message(w, r, rc, http.StatusForbidden, "Permission denied", "Your policy does not let you rotate static keys.")
		return
	}
	s.render(w, r, rc, "static_rotate.html", "Rotate "+name, http.StatusOK, d)
}

type staticRotatedData struct {
	staticRow
	APIKey string
}

// staticRotate rotates now and shows the new key once. The rotate answer
// carries no key: it is read from static-creds right after, and that read
// is what Vault Agent does too, so the page shows what the apps will get.
func (s *Server) staticRotate(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	name, ok := s.staticName(w, r, rc)
	if !ok {
		return
	}
	// Read first: the user hears "no such key" as a 404, not Vault's 400.
	if _, ok := s.readStatic(w, r, rc, name); !ok {
		return
	}
	ctx := r.Context()
	rot, err := rc.vault.Logical().WriteWithContext(ctx, rc.path("static-keys/"+name+"/rotate"), map[string]interface{}{})
	if err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	d := staticRotatedData{}
	if rot != nil {
		d.staticRow = staticView(name, rot.Data)
	}
	creds, err := rc.vault.Logical().ReadWithContext(ctx, rc.path("static-creds/"+name))
	if err == nil && creds != nil {
		// A scheduled rotation between the two calls gives a newer key:
		// it is the current one, so it is still the one to show.
		d.staticRow = staticView(name, creds.Data)
		if rot != nil {
			// static-creds does not name the previous key; rotate does.
			d.PreviousKeyID = str(rot.Data, "previous_key_id")
		}
		d.APIKey = str(creds.Data, "api_key")
	} else if err != nil {
		s.log.Warn("static key rotated, its new key could not be read", "tenant", rc.tenant, "name", name, "error", err)
	}
	w.Header().Set("Cache-Control", "no-store")
	s.render(w, r, rc, "static_rotated.html", "Static key rotated", http.StatusOK, d)
}
