// Package loopback checks that addresses stay on 127.0.0.0/8 or ::1.
package loopback

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// IsLoopback reports whether ip is in 127.0.0.0/8 or is ::1 (IPv4-mapped too).
func IsLoopback(ip netip.Addr) bool {
	return ip.Unmap().IsLoopback()
}

// Resolve resolves host to its IPs and fails unless every one is loopback.
// An empty host (all interfaces) is refused.
func Resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		return nil, fmt.Errorf("empty host means every interface; give 127.0.0.1 or ::1")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if !IsLoopback(ip) {
			return nil, fmt.Errorf("%s is not a loopback address (only 127.0.0.0/8 and ::1 are allowed)", host)
		}
		return []netip.Addr{ip.Unmap()}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", host, err)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("%s resolves to nothing", host)
	}
	out := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		if !IsLoopback(ip) {
			return nil, fmt.Errorf("%s resolves to %s, which is not loopback (only 127.0.0.0/8 and ::1 are allowed)", host, ip)
		}
		out = append(out, ip.Unmap())
	}
	return out, nil
}

// CheckHostPort checks a "host:port" listen or dial address.
func CheckHostPort(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if _, err := Resolve(context.Background(), host); err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	return nil
}

// CheckURL checks the host of an endpoint URL such as https://127.0.0.1:2379.
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		// etcd also accepts bare host:port
		return CheckHostPort(raw)
	}
	if _, err := Resolve(context.Background(), u.Hostname()); err != nil {
		return fmt.Errorf("endpoint %q: %w", raw, err)
	}
	return nil
}
