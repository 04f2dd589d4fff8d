// Package bugs holds orderd's run-time bug switches: each bug has an on/off
// switch and an intensity whose meaning is documented per bug in Docs.
package bugs

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Bug names, exactly as used by flags, the admin API and metrics.
const (
	GoroutineLeak   = "goroutine_leak"
	ChannelDeadlock = "channel_deadlock"
	MutexDeadlock   = "mutex_deadlock"
	GlobalDeadlock  = "global_deadlock"
	MapRace         = "map_race"
	MemoryLeak      = "memory_leak"
	CheckThenAct    = "check_then_act"
)

// Spec describes one bug: its default intensity and what intensity means.
type Spec struct {
	Name             string
	DefaultIntensity float64
	Doc              string
}

// Specs lists every bug orderd knows, in a stable order.
var Specs = []Spec{
	{GoroutineLeak, 3, "goroutines leaked per API request (rounded, >=1); kinds rotate: receive on a never-closed channel, wait on a never-stopped time.Timer, a goroutine whose deferred cancel never runs"},
	{ChannelDeadlock, 1, "probability (0..1] that a /inventory/reserve worker blocks forever on an unbuffered send nobody receives; disabling drains the stuck workers"},
	{MutexDeadlock, 1, "milliseconds held between the two lock acquisitions (create: A then B, reserve: B then A) to widen the window; a deadlock persists until restart"},
	{GlobalDeadlock, 1, "ignored; enabling makes orderd close its listeners and re-exec itself (same PID) into a network-free deadlock so the runtime dies with 'all goroutines are asleep'"},
	{MapRace, 8, "unsynchronized cache writes per API request (>=1), made behind the request by two goroutines that take no lock; list requests iterate the cache while others delete from it"},
	{MemoryLeak, 65536, "bytes retained per API request; values stay reachable through a side index after their map entry is deleted"},
	{CheckThenAct, 1, "milliseconds slept between the stock check (Get) and the act (Put) of a reservation; 0 = runtime.Gosched only"},
}

// Switch is one bug's state; safe for concurrent use.
type Switch struct {
	spec      Spec
	enabled   atomic.Bool
	intensity atomic.Uint64 // float64 bits
}

// Enabled reports whether the bug is on.
func (s *Switch) Enabled() bool { return s.enabled.Load() }

// Intensity returns the current intensity.
func (s *Switch) Intensity() float64 { return math.Float64frombits(s.intensity.Load()) }

// State is the JSON view of a switch.
type State struct {
	Enabled   bool    `json:"enabled"`
	Intensity float64 `json:"intensity"`
	Doc       string  `json:"doc,omitempty"`
}

// Registry holds all switches and notifies listeners on change.
type Registry struct {
	switches map[string]*Switch
	mu       sync.Mutex
	hooks    []func(name string, st State)
}

// NewRegistry returns a registry with every bug off at its default intensity.
func NewRegistry() *Registry {
	r := &Registry{switches: make(map[string]*Switch, len(Specs))}
	for _, sp := range Specs {
		s := &Switch{spec: sp}
		s.intensity.Store(math.Float64bits(sp.DefaultIntensity))
		r.switches[sp.Name] = s
	}
	return r
}

// Get returns the switch for name; it panics on an unknown name (a programming error).
func (r *Registry) Get(name string) *Switch {
	s, ok := r.switches[name]
	if !ok {
		panic("bugs: unknown bug " + name)
	}
	return s
}

// Names returns all bug names, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.switches))
	for n := range r.switches {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// OnChange registers fn, called (synchronously) after each Set.
func (r *Registry) OnChange(fn func(name string, st State)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hooks = append(r.hooks, fn)
}

// Set changes a switch. A nil intensity keeps the current one.
func (r *Registry) Set(name string, enabled bool, intensity *float64) (State, error) {
	s, ok := r.switches[name]
	if !ok {
		return State{}, fmt.Errorf("unknown bug %q (known: %s)", name, strings.Join(r.Names(), ", "))
	}
	if intensity != nil {
		v := *intensity
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return State{}, fmt.Errorf("bug %s: intensity must be a finite number >= 0, got %v", name, v)
		}
		s.intensity.Store(math.Float64bits(v))
	}
	s.enabled.Store(enabled)
	st := r.state(s)
	r.mu.Lock()
	hooks := append([]func(string, State){}, r.hooks...)
	r.mu.Unlock()
	for _, h := range hooks {
		h(name, st)
	}
	return st, nil
}

func (r *Registry) state(s *Switch) State {
	return State{Enabled: s.Enabled(), Intensity: s.Intensity(), Doc: s.spec.Doc}
}

// Snapshot returns the state of all switches.
func (r *Registry) Snapshot() map[string]State {
	out := make(map[string]State, len(r.switches))
	for n, s := range r.switches {
		out[n] = r.state(s)
	}
	return out
}

// ParseFlag parses "name" or "name=intensity" (from --bug) into a name and an
// optional intensity.
func ParseFlag(v string) (string, *float64, error) {
	name, val, hasVal := strings.Cut(strings.TrimSpace(v), "=")
	if name == "" {
		return "", nil, fmt.Errorf("--bug %q: empty name", v)
	}
	if !hasVal {
		return name, nil, nil
	}
	f, err := strconv.ParseFloat(val, 64)
	if err != nil {
		return "", nil, fmt.Errorf("--bug %q: intensity is not a number: %w", v, err)
	}
	return name, &f, nil
}
