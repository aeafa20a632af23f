package portal

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

const (
	sessionCookie = "portal_session"
	// preCookie carries the sign-in forms' CSRF token (double submit)
	// before there is a session.
	preCookie = "portal_signin"
	// oidcCookie names the pending OIDC sign-in of this browser.
	oidcCookie = "portal_oidc"
	csrfField  = "csrf"
)

// session is one signed-in user. The Vault token lives here, in memory
// only: it is never written to disk, a cookie, a page or a log.
type session struct {
	user           string
	token          string
	csrf           string
	expires        time.Time
	canListTenants bool

	mu     sync.Mutex
	tenant string
	flash  string
	caps   map[string][]string
	capsAt time.Time
	// sent is the issue forms this session has sent, by their once token
	// (a new one in each form): the key id each issued, "" while its issue
	// is in flight. A reload or a second click sends the same token again
	// and issues no second key. sentOrder bounds it to maxSentForms.
	sent      map[string]string
	sentOrder []string
}

// maxSentForms is how many issue forms a session remembers: more than
// anyone keeps open in tabs.
const maxSentForms = 64

// claimForm records the issue form once as sent. fresh is false when it was
// sent before; keyID is then what it issued ("" while still in flight).
func (ss *session) claimForm(once string) (keyID string, fresh bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if id, ok := ss.sent[once]; ok {
		return id, false
	}
	if ss.sent == nil {
		ss.sent = map[string]string{}
	}
	if len(ss.sentOrder) == maxSentForms {
		delete(ss.sent, ss.sentOrder[0])
		ss.sentOrder = ss.sentOrder[1:]
	}
	ss.sent[once] = ""
	ss.sentOrder = append(ss.sentOrder, once)
	return "", true
}

// settleForm records what the form once issued; keyID "" forgets the form
// (its issue failed, so sending it again may issue).
func (ss *session) settleForm(once, keyID string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if keyID != "" {
		ss.sent[once] = keyID
		return
	}
	delete(ss.sent, once)
	for i, o := range ss.sentOrder {
		if o == once {
			ss.sentOrder = append(ss.sentOrder[:i], ss.sentOrder[i+1:]...)
			break
		}
	}
}

func (ss *session) getTenant() string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.tenant
}

func (ss *session) setTenant(t string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.tenant, ss.caps = t, nil
}

func (ss *session) setFlash(msg string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.flash = msg
}

func (ss *session) takeFlash() string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	f := ss.flash
	ss.flash = ""
	return f
}

// sessionStore maps the SHA-256 of a session id to its session, so that the
// map holds no usable cookie value. A session that ends without sign-out
// (its time is up, the portal stops, the same browser signs in again) has
// its token revoked through revoke: the portal never leaves a token alive
// that no session can use.
type sessionStore struct {
	mu     sync.Mutex
	m      map[[32]byte]*session
	cookie string // the session cookie's name
	revoke func(token string)
}

func newSessionStore(cookie string, revoke func(token string)) *sessionStore {
	return &sessionStore{m: map[[32]byte]*session{}, cookie: cookie, revoke: revoke}
}

// randomToken is 256 bits from crypto/rand, base64url.
func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand does not fail on supported platforms (Go 1.24+
		// crashes the program itself); never hand out a weak id.
		panic("crypto/rand: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// create stores ss under a fresh id and returns the id for the cookie.
func (st *sessionStore) create(ss *session) string {
	id := randomToken()
	ss.csrf = randomToken()
	st.mu.Lock()
	defer st.mu.Unlock()
	st.m[sha256.Sum256([]byte(id))] = ss
	return id
}

// sweep ends the sessions whose time is up and revokes their tokens; the
// server's sweeper calls it every sweepEvery.
func (st *sessionStore) sweep(now time.Time) {
	var ended []string
	st.mu.Lock()
	for k, v := range st.m {
		if !now.Before(v.expires) {
			delete(st.m, k)
			ended = append(ended, v.token)
		}
	}
	st.mu.Unlock()
	for _, t := range ended {
		st.revoke(t)
	}
}

func (st *sessionStore) get(id string) (*session, bool) {
	if id == "" {
		return nil, false
	}
	k := sha256.Sum256([]byte(id))
	st.mu.Lock()
	defer st.mu.Unlock()
	ss, ok := st.m[k]
	if !ok {
		return nil, false
	}
	// The session ends when its token does, or at MaxSession.
	if !time.Now().Before(ss.expires) {
		delete(st.m, k)
		go st.revoke(ss.token)
		return nil, false
	}
	return ss, true
}

func (st *sessionStore) fromRequest(r *http.Request) (*session, bool) {
	c, err := r.Cookie(st.cookie)
	if err != nil {
		return nil, false
	}
	return st.get(c.Value)
}

// deleteSession removes ss wherever it is stored.
func (st *sessionStore) deleteSession(ss *session) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for k, v := range st.m {
		if v == ss {
			delete(st.m, k)
		}
	}
}

// replace ends the session the request's cookie names, if any, revoking
// its token: a browser that signs in again holds one session, not two.
func (st *sessionStore) replace(r *http.Request) {
	ss, ok := st.fromRequest(r)
	if !ok {
		return
	}
	st.deleteSession(ss)
	st.revoke(ss.token)
}

// close ends every session and revokes its token.
func (st *sessionStore) close() {
	st.mu.Lock()
	old := st.m
	st.m = map[[32]byte]*session{}
	st.mu.Unlock()
	for _, ss := range old {
		st.revoke(ss.token)
	}
}

// pendingOIDC is an OIDC sign-in between the redirect to the identity
// provider and its callback.
type pendingOIDC struct {
	nonce, state string
	expires      time.Time
}

// pendingStore holds OIDC sign-ins in flight, keyed like sessions. Anyone
// may start a sign-in, so it holds at most max: beyond that a start is
// refused until the sweeper drops the expired ones.
type pendingStore struct {
	mu  sync.Mutex
	m   map[[32]byte]pendingOIDC
	max int
}

func newPendingStore(max int) *pendingStore {
	return &pendingStore{m: map[[32]byte]pendingOIDC{}, max: max}
}

const (
	// pendingOIDCTTL is how long a user may take at the identity provider.
	pendingOIDCTTL = 10 * time.Minute
	// maxPendingOIDC bounds the sign-ins in flight (~200 bytes each).
	maxPendingOIDC = 10_000
	// sweepEvery is how often expired sessions and sign-ins are dropped.
	sweepEvery = time.Minute
)

// put stores v under a fresh handle; ok is false when too many sign-ins
// are in flight.
func (p *pendingStore) put(v pendingOIDC) (handle string, ok bool) {
	id := randomToken()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.m) >= p.max {
		return "", false
	}
	v.expires = time.Now().Add(pendingOIDCTTL)
	p.m[sha256.Sum256([]byte(id))] = v
	return id, true
}

func (p *pendingStore) sweep(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, e := range p.m {
		if !now.Before(e.expires) {
			delete(p.m, k)
		}
	}
}

// take returns and removes a pending sign-in: a callback is used once.
func (p *pendingStore) take(id string) (pendingOIDC, bool) {
	k := sha256.Sum256([]byte(id))
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.m[k]
	delete(p.m, k)
	if !ok || !time.Now().Before(v.expires) {
		return pendingOIDC{}, false
	}
	return v, true
}

// equalSecret compares two secrets in constant time; empty never matches.
func equalSecret(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// cookie is a portal cookie: HttpOnly, Path=/, and when the public URL is
// https Secure with the __Host- prefix (cookieName), so no other host of
// the site can set or overwrite it.
func (s *Server) cookie(name, value string, sameSite http.SameSite, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: s.cookieName(name), Value: value, Path: "/", HttpOnly: true, Secure: s.secure,
		SameSite: sameSite, MaxAge: maxAge,
	}
}

// cookieName is the name a portal cookie goes by: __Host-<name> over https.
func (s *Server) cookieName(name string) string {
	if s.secure {
		return "__Host-" + name
	}
	return name
}

func (s *Server) clearCookie(w http.ResponseWriter, name string, sameSite http.SameSite) {
	http.SetCookie(w, s.cookie(name, "", sameSite, -1))
}
