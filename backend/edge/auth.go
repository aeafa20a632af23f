package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/api"
)

// startAuth logs in (AppRole) or adopts the client's token, and keeps the
// token alive with a LifetimeWatcher in the background; an AppRole edge
// logs in again when its token can no longer be renewed.
func (e *Edge) startAuth(ctx context.Context) (func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	secret, err := e.login(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if secret != nil && secret.Auth != nil && secret.Auth.Renewable {
				e.watch(ctx, secret)
			} else {
				// Nothing to renew (a root or periodic-less token): just
				// wait; sync errors will show when it stops working.
				<-ctx.Done()
				return
			}
			if ctx.Err() != nil || e.cfg.RoleID == "" {
				return
			}
			for ctx.Err() == nil {
				if secret, err = e.login(ctx); err == nil {
					break
				}
				e.log.Warn("approle login failed; retrying", "error", err)
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Second):
				}
			}
		}
	}()
	return func() { cancel(); <-done }, nil
}

func (e *Edge) login(ctx context.Context) (*api.Secret, error) {
	if e.cfg.RoleID == "" {
		if e.client.Token() == "" {
			return nil, errors.New("edge: no Vault token and no AppRole role_id")
		}
		look, err := e.client.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			return nil, fmt.Errorf("look up edge token: %w", err)
		}
		renewable, _ := look.TokenIsRenewable()
		ttl, _ := look.TokenTTL()
		return &api.Secret{Auth: &api.SecretAuth{
			ClientToken: e.client.Token(), Renewable: renewable, LeaseDuration: int(ttl / time.Second),
		}}, nil
	}
	sec, err := e.client.Logical().WriteWithContext(ctx, "auth/"+e.cfg.AppRoleMount+"/login", map[string]interface{}{
		"role_id": e.cfg.RoleID, "secret_id": e.cfg.SecretID,
	})
	if err != nil {
		return nil, fmt.Errorf("approle login: %w", err)
	}
	if sec == nil || sec.Auth == nil {
		return nil, errors.New("approle login: no token in the answer")
	}
	e.client.SetToken(sec.Auth.ClientToken)
	e.log.Info("edge logged in with AppRole", "ttl", time.Duration(sec.Auth.LeaseDuration)*time.Second,
		"renewable", sec.Auth.Renewable)
	return sec, nil
}

func (e *Edge) watch(ctx context.Context, secret *api.Secret) {
	w, err := e.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		e.log.Warn("cannot renew the edge token", "error", err)
		<-ctx.Done()
		return
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-w.DoneCh():
			if err != nil {
				e.log.Warn("edge token renewal stopped", "error", err)
			}
			return
		case r := <-w.RenewCh():
			e.log.Debug("edge token renewed", "ttl", leaseTTL(r))
		}
	}
}

func leaseTTL(r *api.RenewOutput) json.Number {
	if r == nil || r.Secret == nil || r.Secret.Auth == nil {
		return ""
	}
	return json.Number(fmt.Sprint(r.Secret.Auth.LeaseDuration))
}
