package portal

import (
	"fmt"
	"net/http"
	"strings"
)

// snippetsNav is offered to whoever may list the tenant's roles: the
// snippets name a role, and show nothing secret (placeholders stand for
// tokens and keys).
var snippetsNav = &navEntry{
	title: "Integration", href: "/snippets", order: 70,
	needs: []capCheck{{"{mount}/tenants/{tenant}/roles/", "list"}},
}

func init() {
	registerPage(page{
		routes: map[string]pageFunc{"GET /snippets": (*Server).snippetsPage},
		nav:    snippetsNav,
	})
}

type snippet struct {
	ID, Title, Lang, Note, Text string
}

type snippetsData struct {
	Roles    []roleView
	Role     roleView
	Snippets []snippet
}

// snippetsPage fills the integration snippets in with the tenant, the mount,
// the portal's Vault address and a role of the tenant's. The text is plain:
// html/template escapes it into <pre>.
func (s *Server) snippetsPage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	if !rc.require(w, r, snippetsNav) {
		return
	}
	want := r.URL.Query().Get("role")
	if want != "" && !nameRE.MatchString(want) {
		s.message(w, r, rc, http.StatusBadRequest, "Bad request", "role must be a role name.")
		return
	}
	roles, err := rc.roles(r.Context(), false)
	if err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	if len(roles) == 0 {
		s.render(w, r, rc, "snippets.html", "Integration", http.StatusOK, snippetsData{})
		return
	}
	d := snippetsData{Roles: roles, Role: roles[0]}
	if want != "" {
		found := false
		for _, ro := range roles {
			if ro.Name == want {
				d.Role, found = ro, true
			}
		}
		if !found {
			s.message(w, r, rc, http.StatusNotFound, "No such role", "Your tenant has no role of that name.")
			return
		}
	}
	d.Snippets = s.snippets(rc, d.Role)
	s.render(w, r, rc, "snippets.html", "Integration", http.StatusOK, d)
}

func (s *Server) snippets(rc *reqCtx, role roleView) []snippet {
	mount, tenant := s.cfg.Mount, rc.tenant
	addr := strings.TrimRight(s.vault.Address(), "/")
	scopes := strings.Join(role.Scopes, " ")
	firstScope := "read"
	if len(role.Scopes) > 0 {
		firstScope = role.Scopes[0]
	}
	credsPath := mount + "/tenants/" + tenant + "/creds/" + role.Name
	agent := fmt.Sprintf(`{{- with secret %q "name=my-app" -}}
{{ .Data.api_key }}
{{- end -}}
`, credsPath)
	agentHCL := fmt.Sprintf(`vault {
  address = %q
}

auto_auth {
  # Replace with your platform's auth method (approle, kubernetes, jwt, ...).
  method "token_file" {
    config = {
      token_file_path = "vault-token"
    }
  }
}

template {
  source      = "api-key.ctmpl"
  destination = "api-key.txt"
  perms       = "0600"
}
`, addr)
	curl := fmt.Sprintf(`# VAULT_TOKEN: a token allowed to verify for %[1]s (a gateway's);
# API_KEY: the key a client presented.
curl -sS -X POST \
  -H "X-Vault-Token: $VAULT_TOKEN" \
  -H "Content-Type: application/json" \
  --data "{\"api_key\": \"$API_KEY\", \"required_scopes\": [\"%[4]s\"]}" \
  %[2]s/v1/%[3]s/tenants/%[1]s/verify
# {"data": {"valid": true, "code": "VALID", "tenant": "%[1]s", ...}}
`, tenant, addr, mount, firstScope)
	nginx := fmt.Sprintf(`# /etc/nginx/conf.d/api.conf, beside apikeys-edge on 127.0.0.1:8089
# (snippets apikeys-check.conf and apikeys-protect.conf from
# bootstrap/gateways/nginx).
upstream apikeys_edge {
    server 127.0.0.1:8089;
    keepalive 16;
}
upstream backend {
    server 127.0.0.1:8080;
}
server {
    listen 80;
    include /etc/nginx/snippets/apikeys-check.conf;
    location /api/ {
        # role %[1]s: require its scopes, accept only %[2]s's keys
        set $apikeys_scopes "%[3]s";
        set $apikeys_tenant_filter %[2]s;
        include /etc/nginx/snippets/apikeys-protect.conf;
        proxy_pass http://backend;
    }
}
`, role.Name, tenant, scopes)
	caddy := fmt.Sprintf(`# Caddy built with the apikeys module (make caddy).
api.example.com {
	route /api/* {
		apikeys {
			vault_addr %[1]s
			mount %[2]s
			token_file /run/secrets/apikeys-gateway-token
			tenant %[3]s
			# role %[4]s
			scopes %[5]s
		}
		reverse_proxy 127.0.0.1:8080
	}
}
`, addr, mount, tenant, role.Name, scopes)
	return []snippet{
		{"snippet-agent", "Vault Agent template (api-key.ctmpl)", "consul-template",
			"Renders a key of role " + role.Name + " into a file; the agent renews its lease and renders a new key before it ends.", agent},
		{"snippet-agent-hcl", "Vault Agent configuration (agent.hcl)", "hcl", "Runs the template above against this Vault.", agentHCL},
		{"snippet-curl", "Verify a key with curl", "shell", "What a gateway asks Vault: the answer's code says why a key is refused.", curl},
		{"snippet-nginx", "nginx", "nginx", "nginx asks apikeys-edge through auth_request before proxying.", nginx},
		{"snippet-caddy", "Caddy", "caddyfile", "The same check inside Caddy's process.", caddy},
	}
}
