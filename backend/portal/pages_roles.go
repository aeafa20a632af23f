package portal

import "net/http"

// rolesNav is for tenant admins only. Developers may list and read roles
// too (to see which dev-* roles they can issue from, on the issue page), so
// listing is not what tells the two apart: reading the tenant's usage is
// the tenant admin's and not the developer's (apikeys-tenant-developer.hcl).
var rolesNav = &navEntry{
	title: "Roles", href: "/roles", order: 40,
	needs: []capCheck{
		{"{mount}/tenants/{tenant}/roles/", "list"},
		{"{mount}/tenants/{tenant}/usage", "read"},
	},
}

func init() {
	registerPage(page{
		routes: map[string]pageFunc{"GET /roles": (*Server).rolesPage},
		nav:    rolesNav,
	})
}

type rolesData struct {
	Roles []roleView
}

// rolesPage shows the tenant's roles, read-only: roles are what the
// platform grants a tenant, and the tenant admin policy only reads them.
func (s *Server) rolesPage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	if !rc.require(w, r, rolesNav) {
		return
	}
	roles, err := rc.roles(r.Context(), false)
	if err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	s.render(w, r, rc, "roles.html", "Roles", http.StatusOK, rolesData{Roles: roles})
}
