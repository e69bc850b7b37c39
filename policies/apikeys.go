package policies

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"
	"gopkg.in/yaml.v3"
)

// ConsulKV is the part of Consul's KV API the Consul key source uses
// (*api.KV implements it).
type ConsulKV interface {
	List(prefix string, q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error)
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func itoa(n int) string { return strconv.Itoa(n) }

// keyFilePoll is how often an API key file is checked for changes.
const keyFilePoll = 2 * time.Second

// loadKeyFile reads a YAML list of {name, sha256, scopes}.
func loadKeyFile(s *apiKeySet) error {
	raw, err := os.ReadFile(s.cfg.File)
	if err != nil {
		return err
	}
	var list []apiKey
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&list); err != nil && len(raw) > 0 {
		return fmt.Errorf("%s: %w", s.cfg.File, err)
	}
	return s.store(list)
}

// watchKeyFile reloads the file when its modification time or size
// changes; a broken file keeps the previous keys.
func (a *Authenticator) watchKeyFile(ctx context.Context, s *apiKeySet) {
	stamp := func() string {
		fi, err := os.Stat(s.cfg.File)
		if err != nil {
			return ""
		}
		return fi.ModTime().String() + "/" + strconv.FormatInt(fi.Size(), 10)
	}
	last := stamp()
	t := time.NewTicker(keyFilePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if cur := stamp(); cur != last {
			last = cur
			if err := loadKeyFile(s); err != nil {
				a.log.Warn("API key file reload failed; keeping the previous keys", zap.String("source", s.cfg.Name), zap.Error(err))
			} else {
				a.log.Info("API keys reloaded", zap.String("source", s.cfg.Name))
			}
		}
	}
}

// watchConsulKeys follows the KV prefix with blocking queries. Each value is
// a JSON object {name, sha256, scopes}; an invalid one is skipped and logged.
func (a *Authenticator) watchConsulKeys(ctx context.Context, s *apiKeySet) {
	var index uint64
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: time.Minute}).WithContext(ctx)
		pairs, meta, err := a.consul.List(s.cfg.ConsulPrefix, q)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			a.log.Warn("API keys: Consul KV read failed; keeping the previous keys", zap.String("source", s.cfg.Name), zap.Error(err))
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 10*time.Second)
			index = 0
			continue
		}
		backoff = 100 * time.Millisecond
		if meta.LastIndex < index || meta.LastIndex == 0 {
			index = 0
		} else {
			index = meta.LastIndex
		}
		list := make([]apiKey, 0, len(pairs))
		for _, p := range pairs {
			var k apiKey
			if err := json.Unmarshal(p.Value, &k); err != nil || k.Name == "" {
				a.log.Warn("API keys: ignoring an invalid Consul KV entry", zap.String("key", p.Key))
				continue
			}
			list = append(list, k)
		}
		if err := s.store(list); err != nil {
			a.log.Warn("API keys: Consul KV set rejected; keeping the previous keys", zap.String("source", s.cfg.Name), zap.Error(err))
		}
	}
}

// sleepCtx waits d unless ctx ends first; it reports whether it waited.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// apiKey is one stored key.
type apiKey struct {
	Name   string   `yaml:"name" json:"name"`
	SHA256 string   `yaml:"sha256" json:"sha256"`
	Scopes []string `yaml:"scopes" json:"scopes"`
}

// apiKeySet holds one source's keys by hash.
type apiKeySet struct {
	cfg  APIKeySource
	keys atomic.Pointer[map[[32]byte]apiKey]
}

func (s *apiKeySet) store(list []apiKey) error {
	m := make(map[[32]byte]apiKey, len(list))
	for i, k := range list {
		raw, err := hex.DecodeString(k.SHA256)
		if err != nil || len(raw) != 32 || k.Name == "" {
			return fmt.Errorf("key %d (%q): want a name and sha256 as 64 hex digits", i, k.Name)
		}
		m[[32]byte(raw)] = k
	}
	s.keys.Store(&m)
	return nil
}

func (s *apiKeySet) lookup(key string) (apiKey, bool) {
	m := s.keys.Load()
	if m == nil {
		return apiKey{}, false
	}
	k, ok := (*m)[sha256.Sum256([]byte(key))]
	return k, ok
}
