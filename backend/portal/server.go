package portal

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config is what New needs. Vault is the base client (address, TLS); its
// token, if any, is cleared: every call carries the signed-in user's.
type Config struct {
	Vault         *api.Client
	Mount         string
	PublicURL     string
	UserpassMount string
	// OIDCRole empty: no OIDC sign-in is offered.
	OIDCMount, OIDCRole string
	Logger              hclog.Logger
	// MaxSession caps a session whose token has no TTL (and any other).
	MaxSession time.Duration
	// PageSize is the number of keys per page of the keys list.
	PageSize int
}

// Server is the portal's http.Handler.
type Server struct {
	cfg      Config
	vault    *api.Client
	log      hclog.Logger
	secure   bool
	sessions *sessionStore
	pending  *pendingStore
	tmpl     map[string]*template.Template
	mux      *http.ServeMux
	stop     chan struct{}
	swept    chan struct{} // closed when the sweeper has stopped
}

// maxBody bounds every request body: the portal's forms are a few fields.
const maxBody = 64 << 10

var nameRE = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$`)

// New builds the portal and starts its sweeper (expired sessions and OIDC
// sign-ins); Close stops it.
func New(cfg Config) (*Server, error) {
	if cfg.Vault == nil {
		return nil, errors.New("portal: no Vault client")
	}
	if cfg.Mount == "" {
		cfg.Mount = "apikeys"
	}
	cfg.Mount = strings.Trim(cfg.Mount, "/")
	if cfg.UserpassMount == "" {
		cfg.UserpassMount = "userpass"
	}
	if cfg.OIDCMount == "" {
		cfg.OIDCMount = "oidc"
	}
	if cfg.MaxSession <= 0 {
		cfg.MaxSession = 12 * time.Hour
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 50
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	u, err := url.Parse(cfg.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("portal: public URL %q must be an absolute http(s) URL", cfg.PublicURL)
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	base, err := cfg.Vault.Clone()
	if err != nil {
		return nil, fmt.Errorf("portal: clone the Vault client: %w", err)
	}
	base.ClearToken()
	s := &Server{
		cfg: cfg, vault: base, log: cfg.Logger, secure: u.Scheme == "https",
		pending: newPendingStore(maxPendingOIDC),
		stop:    make(chan struct{}), swept: make(chan struct{}),
	}
	s.sessions = newSessionStore(s.cookieName(sessionCookie), s.revokeToken)
	if err := s.parseTemplates(); err != nil {
		return nil, err
	}
	s.routes()
	go s.sweeper()
	return s, nil
}

// Close stops the sweeper and ends every session, revoking its token.
func (s *Server) Close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.swept
	s.sessions.close()
}

func (s *Server) sweeper() {
	defer close(s.swept)
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.sessions.sweep(now)
			s.pending.sweep(now)
		}
	}
}

// revokeToken revokes the token of a session that ended without sign-out,
// trying thrice: a token no session can use should not outlive it. It
// logs a failure, never the token.
func (s *Server) revokeToken(token string) {
	c, err := s.userClient(token)
	if err != nil {
		s.log.Error("revoke an ended session's token", "error", err)
		return
	}
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), vaultTimeout)
		err = c.Auth().Token().RevokeSelfWithContext(ctx, "")
		cancel()
		var re *api.ResponseError
		// 403: the token is gone already, which is the aim.
		if err == nil || (errors.As(err, &re) && re.StatusCode == http.StatusForbidden) {
			return
		}
		if try == 3 {
			s.log.Error("revoke an ended session's token failed; it lives until its TTL", "status", statusOf(err))
			return
		}
		time.Sleep(time.Duration(try) * time.Second)
	}
}

// statusOf is a Vault error's HTTP status, 0 for an error without one.
// Logs name it instead of the error, whose text holds the request's URL.
func statusOf(err error) int {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

func (s *Server) parseTemplates() error {
	funcs := template.FuncMap{"join": strings.Join}
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return fmt.Errorf("portal: layout template: %w", err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	s.tmpl = map[string]*template.Template{}
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return fmt.Errorf("portal: template %s: %w", base, err)
		}
		s.tmpl[base] = t
	}
	return nil
}

// pageFunc serves one route of a signed-in user.
type pageFunc func(s *Server, w http.ResponseWriter, r *http.Request, rc *reqCtx)

// page is what a page file registers: its routes and its nav entry.
type page struct {
	routes map[string]pageFunc
	nav    *navEntry
}

// navEntry is a nav link offered when every check is granted.
type navEntry struct {
	title, href string
	order       int
	needs       []capCheck
	// or, when set, offers the entry also to whoever is granted every
	// check of or (a page that serves two kinds of user differently).
	or *navEntry
}

// capCheck is one capability on one path; {mount} and {tenant} are filled
// from the configuration and the session.
type capCheck struct {
	path, capability string
}

var pages []page

// registerPage is called from the init of each pages_*.go file.
func registerPage(p page) { pages = append(pages, p) }

func (s *Server) routes() {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix("/static/", http.FileServer(http.FS(static)))
	mux.HandleFunc("GET /static/", func(w http.ResponseWriter, r *http.Request) {
		// Files only: no directory listing.
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := s.sessions.fromRequest(r); ok {
			http.Redirect(w, r, "/keys", http.StatusSeeOther)
			return
		}
		http.Redirect(w, r, "/signin", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /signin", s.signinPage)
	mux.HandleFunc("POST /signin/userpass", s.signinUserpass)
	mux.HandleFunc("GET /auth/oidc/start", s.oidcStart)
	mux.HandleFunc("GET /auth/oidc/callback", s.oidcCallback)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	for _, p := range pages {
		for pattern, h := range p.routes {
			mux.Handle(pattern, s.authed(strings.HasPrefix(pattern, "POST "), h))
		}
	}
	// No catch-all "/": it would turn the mux's 405 for a GET of a
	// POST-only route into a 404. Unknown paths get the mux's plain 404.
	s.mux = mux
}

// Handler is the portal with its security headers and body limit.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store")
		if s.secure {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		defer func() {
			// A handler bug is a 500 page, never a stack trace to the
			// browser (net/http would log it and drop the connection).
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("handler panicked", "path", r.URL.Path, "panic", fmt.Sprint(v))
				s.message(w, r, nil, http.StatusInternalServerError, "Something went wrong", "The portal could not serve this page.")
			}
		}()
		s.mux.ServeHTTP(w, r)
	})
}

// viewData is what every template gets; Page is the page's own data.
type viewData struct {
	Title     string
	Nav       []navLink
	User      string
	Tenant    string
	CanSwitch bool
	CSRF      string
	Flash     string
	Page      interface{}
}

type navLink struct {
	Title, Href string
	Current     bool
}

// render executes a page template into a buffer first, so a template error
// is a clean 500 rather than half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, rc *reqCtx, name, title string, status int, data interface{}) {
	t, ok := s.tmpl[name]
	if !ok {
		s.log.Error("no such template", "template", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	v := viewData{Title: title, Page: data}
	if rc != nil {
		v.User, v.Tenant, v.CSRF = rc.sess.user, rc.tenant, rc.sess.csrf
		v.Flash = rc.sess.takeFlash()
		v.Nav = s.nav(r, rc)
		v.CanSwitch = rc.sess.canListTenants
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		s.log.Error("render failed", "template", name, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

type messageData struct {
	Heading, Text string
	Back          string
}

// message is the plain page of errors and confirmations.
func (s *Server) message(w http.ResponseWriter, r *http.Request, rc *reqCtx, status int, heading, text string) {
	back := "/keys"
	if rc == nil {
		back = "/signin"
	}
	s.render(w, r, rc, "message.html", heading, status, messageData{Heading: heading, Text: text, Back: back})
}

// nav is the registered entries the user's capabilities allow, in order.
func (s *Server) nav(r *http.Request, rc *reqCtx) []navLink {
	var entries []*navEntry
	for _, p := range pages {
		if p.nav != nil {
			entries = append(entries, p.nav)
		}
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].order < entries[j].order })
	var links []navLink
	for _, e := range entries {
		if rc.allowed(r.Context(), e) {
			links = append(links, navLink{Title: e.title, Href: e.href, Current: r.URL.Path == e.href})
		}
	}
	return links
}

// NewHTTPServer is the portal's http.Server, with the timeouts that keep a
// slow or idle client from holding a connection.
func NewHTTPServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		// Vault calls are bounded by the client's 30 s timeout.
		WriteTimeout:   45 * time.Second,
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 32 << 10,
	}
}
