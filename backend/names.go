package backend

import (
	"fmt"
	"regexp"
)

// nameRE is the rule for tenant and role names: DNS-label style, so a name is
// safe in a storage path, a policy path and a Vault Agent template alike.
var nameRE = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$`)

func validateName(kind, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%s name %q must be 1-63 lower-case letters, digits or dashes, starting and ending with a letter or digit", kind, name)
	}
	return nil
}

// namePattern matches any path segment so that a bad name reaches the
// handler and gets a 400 naming the field, not a bare "unsupported path".
func namePattern(field string) string {
	return `(?P<` + field + `>[^/]+)`
}
