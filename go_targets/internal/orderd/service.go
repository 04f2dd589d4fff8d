package orderd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/faultline/faultline/go_targets/internal/bugs"
	"github.com/faultline/faultline/go_targets/internal/store"
)

// Order is one order record (JSON in the store and on the HTTP API).
type Order struct {
	ID              string `json:"id"`
	SKU             string `json:"sku"`
	Qty             int64  `json:"qty"`
	Status          string `json:"status"`
	CreatedUnixNano int64  `json:"created_unix_nano"`
}

// ReserveResult is the outcome of a reservation.
type ReserveResult struct {
	OK        bool   `json:"ok"`
	SKU       string `json:"sku"`
	Remaining int64  `json:"remaining"`
}

// Errors the API layers map to status codes.
var (
	ErrInvalid  = errors.New("invalid request")
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("too much contention on stock key")
)

const (
	maxQty        = 1_000_000
	cacheCapacity = 4096
	casAttempts   = 64
)

// skuAccount is this process's view of one SKU's stock invariant:
// units granted must never exceed the stock known at first sight plus restocks.
type skuAccount struct {
	known   bool
	initial int64
	granted int64
}

// Service implements the order operations shared by the HTTP and gRPC APIs,
// with the bug behaviours woven in.
type Service struct {
	st           store.Store
	bugs         *bugs.Registry
	m            *Metrics
	log          *slog.Logger
	prefix       string
	defaultStock int64

	idPrefix string
	idSeq    atomic.Uint64

	// Lock A (orders bookkeeping) and lock B (inventory accounting). The
	// correct order is A then B; mutex_deadlock makes reserve take B then A.
	muA         sync.Mutex
	ordersBySKU map[string]int64
	muB         sync.Mutex
	accounts    map[string]*skuAccount

	// cache of recent orders; unsynchronized when map_race is on.
	cacheMu sync.RWMutex
	cache   map[string]*Order

	// memory_leak: values deleted from leakMap stay reachable via leakIndex.
	leakMu    sync.Mutex
	leakMap   map[string][]byte
	leakIndex [][]byte
	retained  atomic.Int64

	leakSeq atomic.Uint64
	pool    *reservePool
}

func newService(st store.Store, reg *bugs.Registry, m *Metrics, log *slog.Logger, prefix string, defaultStock int64, workers int) *Service {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	s := &Service{
		st: st, bugs: reg, m: m, log: log, prefix: strings.TrimRight(prefix, "/") + "/",
		defaultStock: defaultStock,
		idPrefix:     hex.EncodeToString(b),
		ordersBySKU:  make(map[string]int64),
		accounts:     make(map[string]*skuAccount),
		cache:        make(map[string]*Order),
		leakMap:      make(map[string][]byte),
	}
	s.pool = newReservePool(s, workers)
	return s
}

func (s *Service) orderKey(id string) string  { return s.prefix + "orders/" + id }
func (s *Service) stockKey(sku string) string { return s.prefix + "inventory/" + sku }

func validate(sku string, qty int64) error {
	if sku == "" || len(sku) > 128 || strings.ContainsAny(sku, "/ \t\n") {
		return fmt.Errorf("%w: sku must be 1-128 characters without '/' or spaces", ErrInvalid)
	}
	if qty <= 0 || qty > maxQty {
		return fmt.Errorf("%w: qty must be in 1..%d", ErrInvalid, maxQty)
	}
	return nil
}

// beforeRequest applies the per-request bugs: goroutine_leak and memory_leak.
func (s *Service) beforeRequest(payload []byte) {
	if sw := s.bugs.Get(bugs.GoroutineLeak); sw.Enabled() {
		n := int(sw.Intensity() + 0.5)
		if n < 1 {
			n = 1
		}
		for i := 0; i < n; i++ {
			leakGoroutine(s.leakSeq.Add(1))
		}
		s.m.LeakedGoroutine.Add(float64(n))
	}
	if sw := s.bugs.Get(bugs.MemoryLeak); sw.Enabled() {
		s.retain(payload, int(sw.Intensity()))
	}
}

// leakGoroutine starts one goroutine that never exits; kind rotates.
func leakGoroutine(seq uint64) {
	switch seq % 3 {
	case 0:
		// Receive on a channel nobody will ever close or send on.
		ch := make(chan struct{})
		go func() { <-ch }()
	case 1:
		// A timer that is never stopped and a goroutine waiting on a
		// "done" that only a Stop-aware path would signal.
		t := time.NewTimer(24 * time.Hour)
		done := make(chan struct{})
		go func() {
			select {
			case <-t.C:
			case <-done:
			}
		}()
	default:
		// The cancel that would release this goroutine sits in its own
		// defer, which can only run after the goroutine returns.
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			defer cancel()
			<-ctx.Done()
		}()
	}
}

// retain keeps n bytes derived from payload reachable: it is stored in a map,
// indexed in a side slice, then "evicted" from the map only.
func (s *Service) retain(payload []byte, n int) {
	if n <= 0 {
		return
	}
	if n > 64<<20 {
		n = 64 << 20
	}
	buf := make([]byte, n)
	for i := 0; i < n; i += 4096 {
		buf[i] = byte(i) // touch every page so RSS really grows
	}
	copy(buf, payload)
	key := strconv.FormatUint(s.leakSeq.Add(1), 10)
	s.leakMu.Lock()
	s.leakMap[key] = buf
	s.leakIndex = append(s.leakIndex, buf) // the side index nobody cleans
	delete(s.leakMap, key)                 // looks freed, is not
	s.leakMu.Unlock()
	s.m.RetainedBytes.Set(float64(s.retained.Add(int64(n))))
}

// cachePut stores o under several keys (map_race intensity) and evicts
// arbitrary entries when the cache is full. With map_race on, the fill runs
// behind the request, split between two goroutines that take no lock (a
// write-behind cache filled in parallel): the two writers collide with each
// other, and with every handler reading, scanning or filling the cache,
// however the requests happen to be spaced.
func (s *Service) cachePut(o *Order) {
	sw := s.bugs.Get(bugs.MapRace)
	if sw.Enabled() {
		n := max(int(sw.Intensity()), 1)
		go s.cacheFill(o, 0, n, 2)
		go s.cacheFill(o, 1, n, 2)
		return
	}
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	s.cacheFill(o, 0, 1, 1)
}

// cacheFill writes o under keys first, first+step, ... below n and evicts
// when full; the caller holds cacheMu unless the bug is on.
func (s *Service) cacheFill(o *Order, first, n, step int) {
	for i := first; i < n; i += step {
		k := o.ID
		if i > 0 {
			k = o.ID + "#" + strconv.Itoa(i)
		}
		s.cache[k] = o
	}
	if len(s.cache) > cacheCapacity {
		evict := len(s.cache) - cacheCapacity/2
		for k := range s.cache {
			if evict <= 0 {
				break
			}
			delete(s.cache, k)
			evict--
		}
	}
}

func (s *Service) cacheGet(id string) (*Order, bool) {
	if !s.bugs.Get(bugs.MapRace).Enabled() {
		s.cacheMu.RLock()
		defer s.cacheMu.RUnlock()
	}
	o, ok := s.cache[id]
	return o, ok
}

// cacheScan iterates the whole cache (what a "recent orders" view would do).
func (s *Service) cacheScan() int {
	if !s.bugs.Get(bugs.MapRace).Enabled() {
		s.cacheMu.RLock()
		defer s.cacheMu.RUnlock()
	}
	n := 0
	for _, o := range s.cache {
		if o != nil {
			n++
		}
	}
	return n
}

func (s *Service) holdBetweenLocks() {
	if sw := s.bugs.Get(bugs.MutexDeadlock); sw.Enabled() {
		if d := time.Duration(sw.Intensity() * float64(time.Millisecond)); d > 0 {
			time.Sleep(d)
		} else {
			runtime.Gosched()
		}
	}
}

// CreateOrder records a new order.
func (s *Service) CreateOrder(ctx context.Context, sku string, qty int64) (*Order, error) {
	if err := validate(sku, qty); err != nil {
		return nil, err
	}
	s.beforeRequest([]byte(sku))
	o := &Order{
		ID:              fmt.Sprintf("%s-%08d", s.idPrefix, s.idSeq.Add(1)),
		SKU:             sku,
		Qty:             qty,
		Status:          "created",
		CreatedUnixNano: time.Now().UnixNano(),
	}
	raw, _ := json.Marshal(o)
	if err := s.st.Put(ctx, s.orderKey(o.ID), raw); err != nil {
		return nil, err
	}
	// Lock order A then B (always, on this route).
	s.muA.Lock()
	s.holdBetweenLocks()
	s.muB.Lock()
	s.ordersBySKU[sku]++
	s.muB.Unlock()
	s.muA.Unlock()
	s.cachePut(o)
	return o, nil
}

// GetOrder returns one order, from the cache when possible.
func (s *Service) GetOrder(ctx context.Context, id string) (*Order, error) {
	if id == "" || strings.Contains(id, "/") {
		return nil, fmt.Errorf("%w: bad order id", ErrInvalid)
	}
	s.beforeRequest([]byte(id))
	if o, ok := s.cacheGet(id); ok {
		return o, nil
	}
	kv, err := s.st.Get(ctx, s.orderKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: order %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	var o Order
	if err := json.Unmarshal(kv.Value, &o); err != nil {
		return nil, fmt.Errorf("decoding order %s: %w", id, err)
	}
	s.cachePut(&o)
	return &o, nil
}

// ListOrders returns up to limit orders in id order.
func (s *Service) ListOrders(ctx context.Context, limit int) ([]*Order, error) {
	if limit <= 0 {
		limit = 100
	}
	if limit > 1000 {
		limit = 1000
	}
	s.beforeRequest(nil)
	if s.bugs.Get(bugs.MapRace).Enabled() {
		s.cacheScan() // races with concurrent writers/evictors
	}
	kvs, err := s.st.List(ctx, s.prefix+"orders/", limit)
	if err != nil {
		return nil, err
	}
	out := make([]*Order, 0, len(kvs))
	for _, kv := range kvs {
		var o Order
		if json.Unmarshal(kv.Value, &o) == nil {
			out = append(out, &o)
		}
	}
	return out, nil
}

// Stock returns the current stock of sku (the default when never touched).
func (s *Service) Stock(ctx context.Context, sku string) (int64, error) {
	if err := validate(sku, 1); err != nil {
		return 0, err
	}
	kv, err := s.st.Get(ctx, s.stockKey(sku))
	if errors.Is(err, store.ErrNotFound) {
		return s.defaultStock, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(kv.Value), 10, 64)
}

// SetStock overwrites sku's stock and restarts its invariant accounting.
func (s *Service) SetStock(ctx context.Context, sku string, qty int64) error {
	if err := validate(sku, 1); err != nil {
		return err
	}
	if qty < 0 {
		return fmt.Errorf("%w: stock must be >= 0", ErrInvalid)
	}
	if err := s.st.Put(ctx, s.stockKey(sku), []byte(strconv.FormatInt(qty, 10))); err != nil {
		return err
	}
	s.muB.Lock()
	s.accounts[sku] = &skuAccount{known: true, initial: qty}
	s.muB.Unlock()
	return nil
}

// Reserve takes qty units of sku through the reserve worker pool.
func (s *Service) Reserve(ctx context.Context, sku string, qty int64) (ReserveResult, error) {
	if err := validate(sku, qty); err != nil {
		return ReserveResult{}, err
	}
	s.beforeRequest([]byte(sku))
	return s.pool.submit(ctx, sku, qty)
}

// doReserve runs on a pool worker.
func (s *Service) doReserve(ctx context.Context, sku string, qty int64) (ReserveResult, error) {
	res, before, err := s.takeStock(ctx, sku, qty)
	if err != nil {
		return res, err
	}
	// Bookkeeping under both locks; the order depends on mutex_deadlock.
	if s.bugs.Get(bugs.MutexDeadlock).Enabled() {
		s.muB.Lock()
		s.holdBetweenLocks()
		s.muA.Lock()
	} else {
		s.muA.Lock()
		s.muB.Lock()
	}
	acct := s.accounts[sku]
	if acct == nil {
		acct = &skuAccount{}
		s.accounts[sku] = acct
	}
	if !acct.known {
		acct.known, acct.initial = true, before
	}
	if res.OK {
		acct.granted += qty
		if over := acct.granted - acct.initial; over > 0 {
			if over > qty {
				over = qty
			}
			s.m.Oversold.Add(float64(over))
			s.log.Warn("inventory oversold", "sku", sku, "granted", acct.granted, "initial", acct.initial)
		}
	}
	s.muA.Unlock()
	s.muB.Unlock()
	return res, nil
}

// takeStock decrements the stock of sku by qty if enough is left. It returns
// the stock seen before the reservation. With check_then_act on it reads and
// then writes without any condition; otherwise it compare-and-swaps.
func (s *Service) takeStock(ctx context.Context, sku string, qty int64) (ReserveResult, int64, error) {
	key := s.stockKey(sku)
	racy := s.bugs.Get(bugs.CheckThenAct)
	for attempt := 0; attempt < casAttempts; attempt++ {
		cur, rev, err := s.readStock(ctx, key)
		if err != nil {
			return ReserveResult{}, 0, err
		}
		if cur < qty {
			return ReserveResult{OK: false, SKU: sku, Remaining: cur}, cur, nil
		}
		next := []byte(strconv.FormatInt(cur-qty, 10))
		if racy.Enabled() {
			// Check done; act later, unconditionally.
			if d := time.Duration(racy.Intensity() * float64(time.Millisecond)); d > 0 {
				time.Sleep(d)
			} else {
				runtime.Gosched()
			}
			if err := s.st.Put(ctx, key, next); err != nil {
				return ReserveResult{}, 0, err
			}
			return ReserveResult{OK: true, SKU: sku, Remaining: cur - qty}, cur, nil
		}
		ok, err := s.st.CompareAndSwap(ctx, key, rev, next)
		if err != nil {
			return ReserveResult{}, 0, err
		}
		if ok {
			return ReserveResult{OK: true, SKU: sku, Remaining: cur - qty}, cur, nil
		}
		// Lost the race: back off a little, bounded.
		time.Sleep(time.Duration(mrand.Intn(200*(attempt+1))) * time.Microsecond)
	}
	return ReserveResult{}, 0, ErrConflict
}

// readStock returns the stock and its revision; a missing key is created
// with the default stock first (rev 0 then means "create").
func (s *Service) readStock(ctx context.Context, key string) (int64, int64, error) {
	kv, err := s.st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		// Whether we or a concurrent request created it, read it again.
		if _, cerr := s.st.CompareAndSwap(ctx, key, 0, []byte(strconv.FormatInt(s.defaultStock, 10))); cerr != nil {
			return 0, 0, cerr
		}
		kv, err = s.st.Get(ctx, key)
	}
	if err != nil {
		return 0, 0, err
	}
	v, err := strconv.ParseInt(string(kv.Value), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("stock key %s holds %q: %w", key, kv.Value, err)
	}
	return v, kv.Rev, nil
}
