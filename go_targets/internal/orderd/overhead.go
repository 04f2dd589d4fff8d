package orderd

import "time"

// requestDelay is set at link time only, never by a flag:
//
//	go build -ldflags "-X github.com/faultline/faultline/go_targets/internal/orderd.requestDelay=2ms" ./cmd/orderd
//
// makes a build whose every API request takes that much longer (as a build
// that added a slow call on the request path would): a real, different build
// of the same source. `faultline compare` tells it from an identical build
// (bench/bench_compare.py).
var requestDelay string

// extraDelay is requestDelay parsed once; 0 (the default) adds nothing.
var extraDelay = parseDelay(requestDelay)

func parseDelay(s string) time.Duration {
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		panic("orderd: -X requestDelay=" + s + ": not a non-negative duration")
	}
	return d
}
