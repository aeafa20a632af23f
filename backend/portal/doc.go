// Package portal is the tenants' self-service web portal
// (cmd/apikeys-portal): sign-in through Vault, and pages over one apikeys
// mount, every Vault call made with the signed-in user's own token. The
// portal holds no Vault token of its own, so Vault's policies and the
// plugin's tenant guard are the only access control; the portal's checks
// (capabilities-self, the tenant kept in the session) decide only what to
// offer.
//
// # Adding a page
//
// A page is one handler file and one template:
//
//	pages_<name>.go         handlers, and an init() that calls registerPage
//	templates/<name>.html   {{define "content"}}...{{end}}, rendered inside
//	                        templates/layout.html (nav, sign-out, flash)
//
// registerPage takes a page: the route patterns (net/http ServeMux
// patterns with the method, "GET /roles"; every state change is a POST
// route, and POST routes get the CSRF check before the handler runs), the
// handler of each (a pageFunc, called with the signed-in user's reqCtx:
// session, a Vault client carrying the user's token, the tenant from the
// session), and optionally a nav entry:
//
//	func init() {
//		registerPage(page{
//			routes: map[string]pageFunc{"GET /roles": (*Server).rolesPage},
//			nav: &navEntry{
//				title: "Roles", href: "/roles", order: 40,
//				// Offered when sys/capabilities-self grants every check
//				// on the tenant's paths; {tenant} and {mount} are filled
//				// in from the session.
//				needs: []capCheck{{"{mount}/tenants/{tenant}/roles/", "list"}},
//			},
//		})
//	}
//
// The nav is built per request from one sys/capabilities-self call over
// every registered check (cached in the session for capsTTL). A handler
// that serves a page the nav would not offer calls rc.require(nav) first
// (see rolesPage): a page hidden from the nav is refused by URL too. A
// page that serves two kinds of user sets the entry's or to a second entry
// with the other kind's checks (see notificationsNav: the mount's targets
// for platform admins, the tenant's own for tenant admins), and asks
// rc.grants which kind the user is.
//
// Handlers render with s.render(w, rc, "<name>.html", title, data) and
// report Vault errors with s.vaultError(w, r, rc, err): a 403 is a plain
// message page (and a dead token ends the session), a 400 shows Vault's
// message, anything else is a 500 with the error logged, never a stack
// trace. Every value goes through html/template's escaping; never wrap
// user data in template.HTML.
//
// The tenant never comes from a URL or a form: handlers use rc.tenant,
// set at sign-in from the token's identity (see whoami.go) or, for a
// platform admin, picked on /tenants (a POST checked against the
// capability to list tenants).
package portal
