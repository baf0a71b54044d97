package loadkit

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

func TestCPU(t *testing.T) {
	start := time.Now()
	for x := 0; time.Since(start) < 50*time.Millisecond; x++ {
		_ = fmt.Sprint(x)
	}
	d, err := CPU(os.Getpid())
	if err != nil || d <= 0 {
		t.Fatalf("CPU(self) = %v, %v; want a positive time", d, err)
	}
	if _, err := CPU(-1); err == nil {
		t.Error("CPU(-1): no error")
	}
}

func TestMetrics(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, "# HELP x y\nqpc_a 3\nqpc_b{kind=\"send\"} 1.5\n\n")
	}))
	defer srv.Close()
	m, err := Metrics(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m["qpc_a"] != 3 || m[`qpc_b{kind="send"}`] != 1.5 {
		t.Errorf("Metrics = %v", m)
	}
}
