// Bug: goroutine leak growing with load: every HTTP request starts an audit goroutine that blocks on an unbuffered channel nobody reads.
// Expect: goroutine_leak load
package main

import (
	"net/http"
	"os"
)

var audit = make(chan string) // the audit consumer was never started

func handle(w http.ResponseWriter, r *http.Request) {
	go func() {
		audit <- r.URL.Path // want
	}()
	w.Write([]byte("ok\n"))
}

func main() {
	http.HandleFunc("/", handle)
	http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil)
}
