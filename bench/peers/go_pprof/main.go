// The Go peer of bench/pprof_bench: 100,000 goroutines parked on one channel at call
// depths 1 to 4, then pprof.Lookup("goroutine").WriteTo with debug=2, 1 and 0, and the
// longest scheduling gap of a goroutine that yields in a loop meanwhile (Go stops the
// world for these). Same figure names. Run with GOMAXPROCS=2.
//
//	go_pprof [N]
package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

//go:noinline
func parkAtDepth(depth int, c chan int, parked *sync.WaitGroup) {
	if depth > 1 {
		parkAtDepth(depth-1, c, parked)
		return
	}
	parked.Done()
	<-c
}

func median(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func main() {
	n := 100000
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	rounds := 5
	if s := os.Getenv("ROUNDS"); s != "" {
		if r, err := strconv.Atoi(s); err == nil && r > 0 {
			rounds = r
		}
	}
	fmt.Printf("procs %d\n", runtime.GOMAXPROCS(0))
	c := make(chan int)
	var parked, done sync.WaitGroup
	parked.Add(n)
	done.Add(n)
	for i := 0; i < n; i++ {
		go func(i int) {
			parkAtDepth(i%4+1, c, &parked)
			done.Done()
		}(i)
	}
	parked.Wait()

	var measuring, stop atomic.Bool
	var maxGap atomic.Int64
	var ticker sync.WaitGroup
	ticker.Add(1)
	go func() {
		last := time.Now()
		for !stop.Load() {
			runtime.Gosched()
			now := time.Now()
			gap := now.Sub(last).Nanoseconds()
			if measuring.Load() && gap > maxGap.Load() {
				maxGap.Store(gap)
			}
			last = now
		}
		ticker.Done()
	}()

	prof := pprof.Lookup("goroutine")
	var dumpMs, textMs, protoMs []float64
	var dumpBytes, protoBytes int
	measuring.Store(true)
	for r := 0; r < rounds; r++ {
		var b bytes.Buffer
		t0 := time.Now()
		prof.WriteTo(&b, 2)
		dumpMs = append(dumpMs, ms(time.Since(t0)))
		dumpBytes = b.Len()

		b.Reset()
		t0 = time.Now()
		prof.WriteTo(&b, 1)
		textMs = append(textMs, ms(time.Since(t0)))
		if !strings.Contains(b.String(), "goroutine profile: total") {
			fmt.Fprintln(os.Stderr, "go_pprof: unexpected debug=1 output")
			os.Exit(1)
		}

		b.Reset()
		t0 = time.Now()
		prof.WriteTo(&b, 0)
		protoMs = append(protoMs, ms(time.Since(t0)))
		protoBytes = b.Len()
	}
	measuring.Store(false)
	stop.Store(true)
	ticker.Wait()

	fmt.Printf("goroutines %d count\n", n)
	fmt.Printf("goroutine_dump_ms %.1f ms\n", median(dumpMs))
	fmt.Printf("goroutine_dump_bytes %d B\n", dumpBytes)
	fmt.Printf("goroutine_text_ms %.1f ms\n", median(textMs))
	fmt.Printf("goroutine_proto_ms %.1f ms\n", median(protoMs))
	fmt.Printf("goroutine_proto_bytes %d B\n", protoBytes)
	fmt.Printf("goroutine_dump_stall_ms %.2f ms\n", float64(maxGap.Load())/1e6)

	close(c)
	done.Wait()
}
