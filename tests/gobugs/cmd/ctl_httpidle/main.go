// Control: HTTP server under load: connection goroutines come and go, idle ones sit in IO wait.
// Expect: none load
package main

import (
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil)
}
