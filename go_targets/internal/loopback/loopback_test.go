package loopback

import (
	"context"
	"testing"
)

func TestResolve(t *testing.T) {
	for _, ok := range []string{"127.0.0.1", "127.9.8.7", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"} {
		if _, err := Resolve(context.Background(), ok); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "0.0.0.0", "10.0.0.1", "::", "8.8.8.8", "2001:db8::1"} {
		if _, err := Resolve(context.Background(), bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if err := CheckHostPort(":8080"); err == nil {
		t.Error(":8080 accepted")
	}
	if err := CheckURL("https://127.0.0.1:2379"); err != nil {
		t.Error(err)
	}
	if err := CheckURL("https://192.168.1.1:2379"); err == nil {
		t.Error("non-loopback URL accepted")
	}
}
