// etcd-kvbench: load generator for etcd v3 with the same semantics as our
// kvbench (client/kvbench_main.cc), so scripts/etcd-bench.sh can measure
// etcd with the load points of scripts/kv-bench.sh.
//
// N clients, each a goroutine with one request in flight, share M
// clientv3.Client objects (client i uses connection i % M; each clientv3.Client
// holds its own gRPC connection), like etcd's tools/benchmark --clients/--conns.
// Keys "key-%08d" chosen uniformly from --keys; writes are Put with a
// --value-size-byte value; reads are Get with clientv3's default, linearizable
// consistency (etcd's `benchmark range --consistency=l`). Runs for --duration
// and prints ops/s and latency percentiles, one JSON line with -json (the same
// fields as `kvbench -w json`).
//
// Built offline by scripts/etcd-bench.sh against Debian's golang-etcd-server-dev
// (GOPATH=/usr/share/gocode, GO111MODULE=off).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.uber.org/zap"
)

type clientStats struct {
	latUs     []int64
	reads     int64
	writes    int64
	errors    int64
	lastError string
}

func percentile(sorted []int64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted)-1) + 0.5)
	if i > len(sorted)-1 {
		i = len(sorted) - 1
	}
	return float64(sorted[i]) / 1000.0
}

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated etcd client URLs or HOST:PORT (required)")
	clients := flag.Int("clients", 16, "concurrent clients, each with one request in flight")
	conns := flag.Int("conns", 0, "clientv3.Client objects (gRPC connections) shared by the clients; 0: one per client")
	duration := flag.Duration("duration", 30*time.Second, "how long to run")
	valueSize := flag.Int("value-size", 256, "bytes per written value")
	readRatio := flag.Float64("read-ratio", 0.5, "fraction of operations that are linearizable Gets, 0..1")
	keys := flag.Int("keys", 10000, "number of distinct keys, chosen uniformly")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline of one operation")
	jsonOut := flag.Bool("json", false, "print one JSON line (kvbench -w json fields)")
	flag.Parse()
	if *endpoints == "" || *clients <= 0 || *conns < 0 || *keys <= 0 || *valueSize < 0 ||
		*readRatio < 0 || *readRatio > 1 || *duration <= 0 {
		fmt.Fprintln(os.Stderr, "etcd-kvbench: bad flags; see -h")
		os.Exit(2)
	}
	if *conns == 0 || *conns > *clients {
		*conns = *clients
	}
	eps := strings.Split(*endpoints, ",")
	cs := make([]*clientv3.Client, *conns)
	for i := range cs {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   eps,
			DialTimeout: 10 * time.Second,
			LogConfig:   &zap.Config{Level: zap.NewAtomicLevelAt(zap.ErrorLevel), Encoding: "console", OutputPaths: []string{"stderr"}, ErrorOutputPaths: []string{"stderr"}},
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "etcd-kvbench: dial: %v\n", err)
			os.Exit(1)
		}
		defer c.Close()
		cs[i] = c
	}
	value := make([]byte, *valueSize)
	rand.New(rand.NewSource(1)).Read(value)
	val := string(value)

	stats := make([]clientStats, *clients)
	var done int64
	start := time.Now()
	end := start.Add(*duration)
	var wg sync.WaitGroup
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			kv := cs[i%*conns]
			rng := rand.New(rand.NewSource(time.Now().UnixNano() + int64(i)*7919))
			s := &stats[i]
			for time.Now().Before(end) {
				key := fmt.Sprintf("key-%08d", rng.Intn(*keys))
				read := rng.Float64() < *readRatio
				ctx, cancel := context.WithTimeout(context.Background(), *timeout)
				t0 := time.Now()
				var err error
				if read {
					_, err = kv.Get(ctx, key) // linearizable: the default
				} else {
					_, err = kv.Put(ctx, key, val)
				}
				lat := time.Since(t0)
				cancel()
				if err != nil {
					s.errors++
					s.lastError = err.Error()
					continue
				}
				s.latUs = append(s.latUs, lat.Microseconds())
				if read {
					s.reads++
				} else {
					s.writes++
				}
				atomic.AddInt64(&done, 1)
			}
		}(i)
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	lastOps, last := int64(0), start
	ticker := time.NewTicker(5 * time.Second)
loop:
	for {
		select {
		case <-finished:
			break loop
		case now := <-ticker.C:
			ops := atomic.LoadInt64(&done)
			if now.Before(end) {
				fmt.Fprintf(os.Stderr, "etcd-kvbench: %.0fs elapsed, %d ops, %.0f ops/s now\n",
					now.Sub(start).Seconds(), ops, float64(ops-lastOps)/now.Sub(last).Seconds())
			}
			lastOps, last = ops, now
		}
	}
	ticker.Stop()
	elapsed := time.Since(start).Seconds()

	var all []int64
	var reads, writes, errors int64
	lastError := ""
	for i := range stats {
		s := &stats[i]
		all = append(all, s.latUs...)
		reads += s.reads
		writes += s.writes
		errors += s.errors
		if s.lastError != "" {
			lastError = s.lastError
		}
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	opsPerSec := float64(len(all)) / elapsed
	mx := 0.0
	if len(all) > 0 {
		mx = float64(all[len(all)-1]) / 1000.0
	}
	if *jsonOut {
		out := map[string]interface{}{
			"tool": "etcd-kvbench", "clients": *clients, "conns": *conns,
			"duration_s": round3(elapsed), "value_size": *valueSize, "read_ratio": *readRatio,
			"keys": *keys, "ops": len(all), "reads": reads, "writes": writes, "errors": errors,
			"ops_per_sec": round1(opsPerSec),
			"latency_ms": map[string]float64{
				"p50": percentile(all, 0.5), "p90": percentile(all, 0.9),
				"p99": percentile(all, 0.99), "max": mx,
			},
		}
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
	} else {
		fmt.Printf("etcd-kvbench: clients=%d conns=%d duration=%.1fs value_size=%d read_ratio=%.2f keys=%d\n",
			*clients, *conns, elapsed, *valueSize, *readRatio, *keys)
		fmt.Printf("ops: %d (reads %d, writes %d, errors %d)\n", len(all), reads, writes, errors)
		fmt.Printf("throughput: %.1f ops/s\n", opsPerSec)
		fmt.Printf("latency (ms): p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n",
			percentile(all, 0.5), percentile(all, 0.9), percentile(all, 0.99), mx)
	}
	if errors > 0 {
		fmt.Fprintf(os.Stderr, "etcd-kvbench: %d operations failed; last error: %s\n", errors, lastError)
		os.Exit(1)
	}
}

func round1(x float64) float64 { return float64(int64(x*10+0.5)) / 10 }
func round3(x float64) float64 { return float64(int64(x*1000+0.5)) / 1000 }
