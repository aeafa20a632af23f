package edge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/api"
)

const (
	// minRelogin bounds how often an AppRole edge handed very short,
	// non-renewable tokens logs in.
	minRelogin = time.Second
	// A failed login is retried from loginRetryMin, doubling up to
	// loginRetryMax: well inside the default staleness bound, so an edge
	// whose token ran out while Vault was away is back soon after Vault.
	loginRetryMin = time.Second
	loginRetryMax = 15 * time.Second
)

// token is the edge's Vault token as the login (or lookup) described it;
// the token itself stays in the client only.
type token struct {
	renewable bool
	ttl       time.Duration
	obtained  time.Time
	secret    *api.Secret
}

// expires is when the token stops working; zero for a token without a TTL
// (root).
func (t token) expires() time.Time {
	if t.ttl <= 0 {
		return time.Time{}
	}
	return t.obtained.Add(t.ttl)
}

// reloginDelay is how long an AppRole edge uses a non-renewable token
// before it logs in again: two thirds of its TTL, as Vault's
// LifetimeWatcher sleeps between renewals, so a login that fails has the
// last third of the token's life to be retried.
func reloginDelay(ttl time.Duration) time.Duration {
	return max(ttl*2/3, minRelogin)
}

// startAuth logs in (AppRole) or adopts the client's token, and keeps a
// valid token in the client in the background. A renewable token is
// renewed with a LifetimeWatcher; an AppRole edge logs in again when
// renewal ends (max TTL reached, renewal refused) and, for a token that is
// not renewable (batch tokens, for one), ahead of its expiry. A token-only
// edge cannot get a new token by itself: it warns when its token will
// expire, and sync fails from then on.
func (e *Edge) startAuth(ctx context.Context) (func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	tok, err := e.login(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			expires := e.hold(ctx, tok)
			if ctx.Err() != nil {
				return
			}
			if e.cfg.RoleID == "" {
				if !expires.IsZero() {
					e.log.Warn("edge token cannot be renewed: sync fails once it expires and the edge goes stale; give the edge a renewable or periodic token, or an AppRole",
						"expires_at", expires.UTC().Format(time.RFC3339), "expires_in", time.Until(expires).Round(time.Second))
				}
				<-ctx.Done()
				return
			}
			if tok, err = e.relogin(ctx); err != nil {
				return
			}
		}
	}()
	return func() { cancel(); <-done }, nil
}

// hold keeps tok usable for as long as it can, and returns when the edge
// should log in again (AppRole) or can do no more for the token; its answer
// is when the token expires, as last known.
func (e *Edge) hold(ctx context.Context, tok token) time.Time {
	expires := tok.expires()
	switch {
	case tok.renewable:
		return e.watch(ctx, tok)
	case expires.IsZero():
		// A token without a TTL (root) needs nothing.
		<-ctx.Done()
		return expires
	case e.cfg.RoleID == "":
		return expires
	}
	at := tok.obtained.Add(reloginDelay(tok.ttl))
	e.log.Debug("edge token is not renewable; logging in again before it expires",
		"expires_at", expires.UTC().Format(time.RFC3339), "login_at", at.UTC().Format(time.RFC3339))
	timer := time.NewTimer(time.Until(at))
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-timer.C:
	}
	return expires
}

// relogin logs in with AppRole until it succeeds or ctx ends (its error).
func (e *Edge) relogin(ctx context.Context) (token, error) {
	wait := loginRetryMin
	for {
		tok, err := e.login(ctx)
		if err == nil {
			return tok, nil
		}
		if ctx.Err() != nil {
			return token{}, ctx.Err()
		}
		e.log.Warn("approle login failed; retrying", "error", err, "retry_in", wait)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return token{}, ctx.Err()
		case <-timer.C:
		}
		wait = min(wait*2, loginRetryMax)
	}
}

func (e *Edge) login(ctx context.Context) (token, error) {
	now := time.Now()
	if e.cfg.RoleID == "" {
		if e.client.Token() == "" {
			return token{}, errors.New("edge: no Vault token and no AppRole role_id")
		}
		look, err := e.client.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			return token{}, fmt.Errorf("look up edge token: %w", err)
		}
		renewable, _ := look.TokenIsRenewable()
		ttl, _ := look.TokenTTL()
		return token{
			renewable: renewable, ttl: ttl, obtained: now,
			secret: &api.Secret{Auth: &api.SecretAuth{
				ClientToken: e.client.Token(), Renewable: renewable, LeaseDuration: int(ttl / time.Second),
			}},
		}, nil
	}
	sec, err := e.client.Logical().WriteWithContext(ctx, "auth/"+e.cfg.AppRoleMount+"/login", map[string]interface{}{
		"role_id": e.cfg.RoleID, "secret_id": e.cfg.SecretID,
	})
	if err != nil {
		return token{}, fmt.Errorf("approle login: %w", err)
	}
	if sec == nil || sec.Auth == nil {
		return token{}, errors.New("approle login: no token in the answer")
	}
	e.client.SetToken(sec.Auth.ClientToken)
	tok := token{
		renewable: sec.Auth.Renewable, ttl: time.Duration(sec.Auth.LeaseDuration) * time.Second,
		obtained: now, secret: sec,
	}
	e.log.Info("edge logged in with AppRole", "ttl", tok.ttl, "renewable", tok.renewable)
	return tok, nil
}

// watch renews tok until renewal ends or ctx does, and returns when the
// token expires as of its last renewal. The LifetimeWatcher ends a little
// before expiry when renewals stop extending the token (its max TTL), or
// when renewing keeps failing until the token is about to expire.
func (e *Edge) watch(ctx context.Context, tok token) time.Time {
	expires := tok.expires()
	w, err := e.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: tok.secret})
	if err != nil {
		e.log.Warn("cannot renew the edge token", "error", err)
		tok.renewable = false
		return e.hold(ctx, tok)
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return expires
		case err := <-w.DoneCh():
			if err != nil {
				e.log.Warn("edge token renewal stopped", "error", err)
			}
			return expires
		case r := <-w.RenewCh():
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				ttl := time.Duration(r.Secret.Auth.LeaseDuration) * time.Second
				expires = r.RenewedAt.Add(ttl)
				e.log.Debug("edge token renewed", "ttl", ttl)
			}
		}
	}
}
