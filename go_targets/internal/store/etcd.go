package store

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Observer is told the duration and outcome of every etcd operation.
type Observer func(op string, d time.Duration, err error)

// EtcdConfig configures the etcd store. With CACert/Cert/Key set the client
// uses mutual TLS.
type EtcdConfig struct {
	Endpoints   []string
	CACert      string
	Cert        string
	Key         string
	ServerName  string // verify the server certificate for this name (default: the endpoint's host)
	DialTimeout time.Duration
	OpTimeout   time.Duration // per operation, on top of the caller's context
	Observe     Observer
}

// Etcd is a Store backed by the etcd v3 API.
type Etcd struct {
	cli     *clientv3.Client
	opTO    time.Duration
	observe Observer
}

// NewEtcd connects lazily (it does not block until etcd answers).
func NewEtcd(cfg EtcdConfig) (*Etcd, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("etcd: no endpoints")
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = time.Second
	}
	ccfg := clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.NewNop(),
	}
	if cfg.CACert != "" || cfg.Cert != "" || cfg.Key != "" {
		info := transport.TLSInfo{
			CertFile: cfg.Cert, KeyFile: cfg.Key, TrustedCAFile: cfg.CACert, ServerName: cfg.ServerName,
		}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd: loading TLS material: %w", err)
		}
		ccfg.TLS = tc
	}
	cli, err := clientv3.New(ccfg)
	if err != nil {
		return nil, fmt.Errorf("etcd: creating client for %v: %w", cfg.Endpoints, err)
	}
	obs := cfg.Observe
	if obs == nil {
		obs = func(string, time.Duration, error) {}
	}
	return &Etcd{cli: cli, opTO: cfg.OpTimeout, observe: obs}, nil
}

func (e *Etcd) op(ctx context.Context, name string, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, e.opTO)
	defer cancel()
	start := time.Now()
	err := fn(ctx)
	e.observe(name, time.Since(start), err)
	if err != nil {
		return fmt.Errorf("etcd %s: %w", name, err)
	}
	return nil
}

// Get implements Store.
func (e *Etcd) Get(ctx context.Context, key string) (KV, error) {
	var kv KV
	found := false
	err := e.op(ctx, "get", func(ctx context.Context) error {
		resp, err := e.cli.Get(ctx, key)
		if err != nil {
			return err
		}
		if len(resp.Kvs) > 0 {
			found = true
			kv = KV{Key: key, Value: resp.Kvs[0].Value, Rev: resp.Kvs[0].ModRevision}
		}
		return nil
	})
	if err != nil {
		return KV{}, err
	}
	if !found {
		return KV{}, ErrNotFound
	}
	return kv, nil
}

// Put implements Store.
func (e *Etcd) Put(ctx context.Context, key string, val []byte) error {
	return e.op(ctx, "put", func(ctx context.Context) error {
		_, err := e.cli.Put(ctx, key, string(val))
		return err
	})
}

// CompareAndSwap implements Store with a single etcd transaction.
func (e *Etcd) CompareAndSwap(ctx context.Context, key string, rev int64, val []byte) (bool, error) {
	ok := false
	err := e.op(ctx, "txn", func(ctx context.Context) error {
		var cmp clientv3.Cmp
		if rev == 0 {
			cmp = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		} else {
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", rev)
		}
		resp, err := e.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(val))).Commit()
		if err != nil {
			return err
		}
		ok = resp.Succeeded
		return nil
	})
	return ok, err
}

// List implements Store.
func (e *Etcd) List(ctx context.Context, prefix string, limit int) ([]KV, error) {
	var out []KV
	err := e.op(ctx, "list", func(ctx context.Context) error {
		opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if limit > 0 {
			opts = append(opts, clientv3.WithLimit(int64(limit)))
		}
		resp, err := e.cli.Get(ctx, prefix, opts...)
		if err != nil {
			return err
		}
		out = make([]KV, 0, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			out = append(out, KV{Key: string(kv.Key), Value: kv.Value, Rev: kv.ModRevision})
		}
		return nil
	})
	return out, err
}

// Ping implements Store: a linearizable read of one key, which needs a quorum.
func (e *Etcd) Ping(ctx context.Context) error {
	return e.op(ctx, "ping", func(ctx context.Context) error {
		_, err := e.cli.Get(ctx, "/faultline/health", clientv3.WithCountOnly())
		return err
	})
}

// Close implements Store.
func (e *Etcd) Close() error { return e.cli.Close() }
