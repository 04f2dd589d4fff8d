package orderd

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/faultline/faultline/go_targets/internal/bugs"
	"github.com/faultline/faultline/go_targets/internal/store"
)

// With every bug off the service must be race-free (run with -race) and keep
// the stock invariant.
func TestServiceConcurrentBugsOff(t *testing.T) {
	m := NewMetrics()
	s := newService(store.NewMemory(), bugs.NewRegistry(), m, slog.New(slog.NewTextHandler(io.Discard, nil)), "/t/", 1000, 4)
	defer s.pool.stop()
	ctx := context.Background()
	if err := s.SetStock(ctx, "x", 50); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := 0
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				o, err := s.CreateOrder(ctx, "x", 1)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := s.GetOrder(ctx, o.ID); err != nil {
					t.Error(err)
				}
				if _, err := s.ListOrders(ctx, 5); err != nil {
					t.Error(err)
				}
				r, err := s.Reserve(ctx, "x", 1)
				if err != nil {
					t.Error(err)
				}
				if r.OK {
					mu.Lock()
					granted++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if granted != 50 {
		t.Fatalf("granted %d of 50", granted)
	}
	if err := s.pool.healthy(beatEvery * 20); err != nil {
		t.Fatal(err)
	}
}

func TestParseDelay(t *testing.T) {
	if d := parseDelay(""); d != 0 {
		t.Fatalf("empty: %v", d)
	}
	if d := parseDelay("3ms"); d != 3*time.Millisecond {
		t.Fatalf("3ms: %v", d)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a bad duration must panic at start, not be ignored")
		}
	}()
	parseDelay("three")
}
