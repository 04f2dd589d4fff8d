package tlsstorm

import (
	"math"
	"time"
)

// hist is a log-bucketed latency histogram (about 2% resolution, 1µs..~100s);
// fixed memory whatever the number of samples.
type hist struct {
	counts [1000]uint64
	n      uint64
	max    time.Duration
}

const histBase = 1.02

func bucketOf(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us < 1 {
		return 0
	}
	i := int(math.Log(us)/math.Log(histBase)) + 1
	if i >= len(hist{}.counts) {
		i = len(hist{}.counts) - 1
	}
	return i
}

func (h *hist) add(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.n++
	if d > h.max {
		h.max = d
	}
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

// quantile returns the upper edge of the bucket holding quantile q.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			if i == 0 {
				return time.Microsecond
			}
			d := time.Duration(math.Pow(histBase, float64(i)) * float64(time.Microsecond))
			if d > h.max {
				d = h.max
			}
			return d
		}
	}
	return h.max
}
