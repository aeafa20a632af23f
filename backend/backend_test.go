package backend

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
)

// countingStorage records every storage call, so tests can prove what a
// path reads and writes (verify: nothing when warm, never a write).
type countingStorage struct {
	logical.Storage
	mu                      sync.Mutex
	gets, puts, dels, lists int
	putKeys, delKeys        []string
	// failPut makes Put fail for keys with this prefix.
	failPut string
	// failAt makes the failAt-th write (Put or Delete) since reset and every
	// later one fail: the process "crashed" at that write.
	failAt, writeN int
	// failOnce fails only the failAt-th write: a storage hiccup, not a crash.
	failOnce bool
	// failList makes List fail for prefixes starting with it.
	failList string
}

// failWrite counts a write and says whether it must fail. Caller holds mu.
func (s *countingStorage) failWrite() bool {
	s.writeN++
	return s.failAt > 0 && (s.writeN == s.failAt || (!s.failOnce && s.writeN > s.failAt))
}

var errInjected = errors.New("injected storage failure")

func (s *countingStorage) Get(ctx context.Context, k string) (*logical.StorageEntry, error) {
	s.mu.Lock()
	s.gets++
	s.mu.Unlock()
	return s.Storage.Get(ctx, k)
}

func (s *countingStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	s.mu.Lock()
	s.puts++
	s.putKeys = append(s.putKeys, e.Key)
	fail := s.failWrite() || (s.failPut != "" && strings.HasPrefix(e.Key, s.failPut))
	s.mu.Unlock()
	if fail {
		return errInjected
	}
	return s.Storage.Put(ctx, e)
}

func (s *countingStorage) Delete(ctx context.Context, k string) error {
	s.mu.Lock()
	s.dels++
	s.delKeys = append(s.delKeys, k)
	fail := s.failWrite()
	s.mu.Unlock()
	if fail {
		return errInjected
	}
	return s.Storage.Delete(ctx, k)
}

func (s *countingStorage) List(ctx context.Context, p string) ([]string, error) {
	s.mu.Lock()
	s.lists++
	fail := s.failList != "" && strings.HasPrefix(p, s.failList)
	s.mu.Unlock()
	if fail {
		return nil, errInjected
	}
	return s.Storage.List(ctx, p)
}

// hookStorage runs a hook before each Get, Put or Delete; a hook's error
// fails the call. Tests use it to stop a write half way, to fail a call the
// way Vault's storage would, or to act in the middle of a request.
type hookStorage struct {
	logical.Storage
	beforeGet, beforePut, beforeDelete func(ctx context.Context, key string) error
}

func (s *hookStorage) Get(ctx context.Context, k string) (*logical.StorageEntry, error) {
	if s.beforeGet != nil {
		if err := s.beforeGet(ctx, k); err != nil {
			return nil, err
		}
	}
	return s.Storage.Get(ctx, k)
}

func (s *hookStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if s.beforePut != nil {
		if err := s.beforePut(ctx, e.Key); err != nil {
			return err
		}
	}
	return s.Storage.Put(ctx, e)
}

func (s *hookStorage) Delete(ctx context.Context, k string) error {
	if s.beforeDelete != nil {
		if err := s.beforeDelete(ctx, k); err != nil {
			return err
		}
	}
	return s.Storage.Delete(ctx, k)
}

func (s *countingStorage) reset() {
	s.mu.Lock()
	s.gets, s.puts, s.dels, s.lists = 0, 0, 0, 0
	s.putKeys, s.delKeys = nil, nil
	s.writeN = 0
	s.mu.Unlock()
}

func (s *countingStorage) writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.puts + s.dels
}

func newTestBackend(t testing.TB) (*backend, *countingStorage) {
	t.Helper()
	return newTestBackendOn(t, &countingStorage{Storage: &logical.InmemStorage{}})
}

// newTestBackendOn makes a backend over existing storage: two backends over
// one storage play an active node and a standby.
func newTestBackendOn(t testing.TB, s *countingStorage) (*backend, *countingStorage) {
	t.Helper()
	conf := logical.TestBackendConfig()
	conf.StorageView = s
	// Warnings and errors only: trace output would drown test and benchmark
	// output.
	conf.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: os.Stderr})
	lb, err := Factory(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	return lb.(*backend), s
}

func (b *backend) do(t testing.TB, s logical.Storage, op logical.Operation, path string, data map[string]interface{}) *logical.Response {
	t.Helper()
	resp, err := b.HandleRequest(context.Background(), &logical.Request{
		Operation: op, Path: path, Data: data, Storage: s,
	})
	if err != nil {
		t.Fatalf("%s %s: %v", op, path, err)
	}
	if resp != nil && resp.IsError() {
		t.Fatalf("%s %s: %v", op, path, resp.Error())
	}
	return resp
}

// setupAcme creates tenant acme with role web and issues one key.
func setupAcme(t testing.TB, b *backend, s logical.Storage) (key, id string, resp *logical.Response) {
	t.Helper()
	b.do(t, s, logical.CreateOperation, "tenants/acme", map[string]interface{}{})
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/web", map[string]interface{}{"scopes": "read,write", "ttl": "1h"})
	resp = b.do(t, s, logical.ReadOperation, "tenants/acme/creds/web", nil)
	return resp.Data["api_key"].(string), resp.Data["key_id"].(string), resp
}
