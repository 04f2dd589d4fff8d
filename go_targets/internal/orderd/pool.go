package orderd

import (
	"context"
	"fmt"
	"math/rand"
	"sync/atomic"
	"time"

	"github.com/faultline/faultline/go_targets/internal/bugs"
)

type reserveJob struct {
	ctx   context.Context
	sku   string
	qty   int64
	reply chan reserveReply // buffered(1): the worker never blocks on it
}

type reserveReply struct {
	res ReserveResult
	err error
}

// reservePool serves /inventory/reserve. Each worker beats a heartbeat while
// idle and after every job; /healthz fails when a beat is too old.
type reservePool struct {
	s     *Service
	jobs  chan reserveJob
	beats []atomic.Int64 // unix nanos of each worker's last beat
	// stuck is the unbuffered channel channel_deadlock sends on; nobody
	// receives from it except the drainer started when the bug is turned off.
	stuck      chan reserveReply
	stuckCount atomic.Int64
	draining   atomic.Bool
	quit       chan struct{}
}

const beatEvery = 100 * time.Millisecond

func newReservePool(s *Service, workers int) *reservePool {
	if workers < 1 {
		workers = 1
	}
	p := &reservePool{
		s:     s,
		jobs:  make(chan reserveJob, workers),
		beats: make([]atomic.Int64, workers),
		stuck: make(chan reserveReply),
		quit:  make(chan struct{}),
	}
	now := time.Now().UnixNano()
	for i := range p.beats {
		p.beats[i].Store(now)
		go p.worker(i)
	}
	return p
}

func (p *reservePool) worker(i int) {
	t := time.NewTicker(beatEvery)
	defer t.Stop()
	for {
		select {
		case <-p.quit:
			return
		case <-t.C:
			p.beats[i].Store(time.Now().UnixNano())
		case j := <-p.jobs:
			p.beats[i].Store(time.Now().UnixNano())
			res, err := p.s.doReserve(j.ctx, j.sku, j.qty)
			r := reserveReply{res: res, err: err}
			if sw := p.s.bugs.Get(bugs.ChannelDeadlock); sw.Enabled() && rand.Float64() < sw.Intensity() {
				p.s.m.StuckWorkers.Set(float64(p.stuckCount.Add(1)))
				p.stuck <- r // blocks: nobody receives
				p.s.m.StuckWorkers.Set(float64(p.stuckCount.Add(-1)))
			}
			j.reply <- r
			p.beats[i].Store(time.Now().UnixNano())
		}
	}
}

func (p *reservePool) submit(ctx context.Context, sku string, qty int64) (ReserveResult, error) {
	j := reserveJob{ctx: ctx, sku: sku, qty: qty, reply: make(chan reserveReply, 1)}
	select {
	case p.jobs <- j:
	case <-ctx.Done():
		return ReserveResult{}, ctx.Err()
	}
	select {
	case r := <-j.reply:
		return r.res, r.err
	case <-ctx.Done():
		return ReserveResult{}, ctx.Err()
	}
}

// healthy reports an error naming the first worker whose beat is older than maxAge.
func (p *reservePool) healthy(maxAge time.Duration) error {
	now := time.Now()
	for i := range p.beats {
		if age := now.Sub(time.Unix(0, p.beats[i].Load())); age > maxAge {
			return fmt.Errorf("reserve worker %d has not beaten for %s (limit %s)", i, age.Round(time.Millisecond), maxAge)
		}
	}
	return nil
}

// drain releases workers stuck on the unbuffered send; started when
// channel_deadlock is turned off. Bounded: stops when none are stuck or
// after 10s of no progress.
func (p *reservePool) drain() {
	if !p.draining.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer p.draining.Store(false)
		deadline := time.Now().Add(10 * time.Second)
		for p.stuckCount.Load() > 0 && time.Now().Before(deadline) && !p.s.bugs.Get(bugs.ChannelDeadlock).Enabled() {
			select {
			case <-p.stuck:
				deadline = time.Now().Add(10 * time.Second)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
}

func (p *reservePool) stop() { close(p.quit) }
