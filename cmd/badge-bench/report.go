package main

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Latency statistics.

// percentile returns the p-th percentile (0 < p ≤ 100) of sorted by the
// nearest-rank method, or 0 for no samples. The rank is rounded down
// within 1e-9, so that the rounding error of a p such as 99.9, which has
// no exact binary form, does not move it one sample up.
func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p/100*float64(len(sorted)) - 1e-9))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// latencyStats summarizes durations, in milliseconds. Below 1,000
// samples p99.9 is the maximum (nearest rank).
type latencyStats struct {
	N    int     `json:"n"`
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
}

func summarize(ns []int64) *latencyStats {
	if len(ns) == 0 {
		return nil
	}
	s := slices.Clone(ns)
	slices.Sort(s)
	var sum float64
	for _, v := range s {
		sum += float64(v)
	}
	ms := func(v int64) float64 { return roundTo(float64(v)/1e6, 4) }
	return &latencyStats{
		N: len(s), Min: ms(s[0]), Mean: roundTo(sum/float64(len(s))/1e6, 4),
		P50: ms(percentile(s, 50)), P90: ms(percentile(s, 90)), P99: ms(percentile(s, 99)),
		P999: ms(percentile(s, 99.9)), Max: ms(s[len(s)-1]),
	}
}

func roundTo(v float64, digits int) float64 {
	p := math.Pow10(digits)
	return math.Round(v*p) / p
}

// Raw samples (--samples).

// rawSample is a sample with the uid of the worker that took it.
type rawSample struct {
	sample
	uid uint32
}

// samplesHeader is the first line of a --samples file.
const samplesHeader = "start_unix_ns,latency_ns,uid,result"

// writeSamples writes the samples as CSV, by start time: the wall clock at
// the start in Unix nanoseconds, the latency in nanoseconds, the worker's
// uid, and "OK", the gRPC code of a failure, or for propagation "create"
// or "delete".
func writeSamples(w io.Writer, raw []rawSample) error {
	slices.SortStableFunc(raw, func(a, b rawSample) int { return cmp.Compare(a.Start, b.Start) })
	bw := bufio.NewWriter(w)
	bw.WriteString(samplesHeader + "\n")
	var line []byte
	for _, s := range raw {
		code := s.Code
		if code == "" {
			code = "OK"
		}
		line = strconv.AppendInt(line[:0], s.Start, 10)
		line = append(line, ',')
		line = strconv.AppendInt(line, s.NS, 10)
		line = append(line, ',')
		line = strconv.AppendUint(line, uint64(s.uid), 10)
		line = append(line, ',')
		line = append(line, code...)
		line = append(line, '\n')
		if _, err := bw.Write(line); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// Reports.

// benchReport is the result of a run; --json prints it as is. With
// several sockets, Socket is their comma-separated list, the figures are
// their totals, and Sockets has each one's part.
type benchReport struct {
	Mode           string             `json:"mode"`
	Socket         string             `json:"socket"`
	Workers        int                `json:"workers"`
	UIDs           string             `json:"uids,omitempty"`
	DurationS      float64            `json:"duration_s"`
	ElapsedS       float64            `json:"elapsed_s,omitempty"`
	Calls          int                `json:"calls,omitempty"`
	CallsPerSec    float64            `json:"calls_per_s,omitempty"`
	Errors         int                `json:"errors"`
	ErrorCodes     map[string]int     `json:"error_codes,omitempty"`
	FirstError     string             `json:"first_error,omitempty"`
	LatencyMS      *latencyStats      `json:"latency_ms,omitempty"`
	Streams        *streamReport      `json:"streams,omitempty"`
	Propagation    *propagationReport `json:"propagation,omitempty"`
	Server         *serverReport      `json:"server,omitempty"`
	Host           *hostReport        `json:"host,omitempty"`
	SamplesFile    string             `json:"samples_file,omitempty"`
	SamplesWritten int                `json:"samples_written,omitempty"`
	Notes          []string           `json:"notes,omitempty"`
	Sockets        []socketReport     `json:"sockets,omitempty"`
}

// socketReport is one socket's part of a run over several (fetch, jwt,
// and the opening of stream and propagation).
type socketReport struct {
	Socket  string `json:"socket"`
	Workers int    `json:"workers"`
	// Count is the successful calls (fetch, jwt) or streams opened
	// (stream, propagation); LatencyMS their latency or first SVID's.
	Count      int            `json:"count"`
	Errors     int            `json:"errors"`
	ErrorCodes map[string]int `json:"error_codes,omitempty"`
	LatencyMS  *latencyStats  `json:"latency_ms,omitempty"`
	// Server is the daemon of the socket (fetch, jwt).
	Server *serverReport `json:"server,omitempty"`
}

// serverReport is the daemon's resource use over the measured window;
// with several daemons (several sockets), the sum of theirs, PID 0 and
// their pids in PIDs.
type serverReport struct {
	PID          int     `json:"pid"`
	PIDs         []int   `json:"pids,omitempty"`
	CPUMS        float64 `json:"cpu_ms"`
	CPUMSKernel  float64 `json:"cpu_ms_kernel"` // part of CPUMS spent in the kernel
	CPUMSPerCall float64 `json:"cpu_ms_per_call,omitempty"`
	RSSKiBBefore uint64  `json:"rss_kib_before"`
	RSSKiBAfter  uint64  `json:"rss_kib_after"`
	// The anonymous part of RSS: without the mmapped database, whose
	// pages count in RSS as bbolt touches them.
	RSSAnonKiBBefore uint64 `json:"rss_anon_kib_before"`
	RSSAnonKiBAfter  uint64 `json:"rss_anon_kib_after"`
}

// hostReport is the machine's CPU use over the measured window (for
// stream, the opening), in cores busy on average.
type hostReport struct {
	CPUs        int     `json:"cpus"`
	BusyCores   float64 `json:"busy_cores"`
	DaemonCores float64 `json:"daemon_cores"`
	BenchCores  float64 `json:"bench_cores"`
	OtherCores  float64 `json:"other_cores"`
}

// streamReport is the result of --mode stream.
type streamReport struct {
	Requested           int           `json:"requested"`
	Open                int           `json:"open"`
	OpenAllS            float64       `json:"open_all_s"`
	OpenLatencyMS       *latencyStats `json:"open_latency_ms,omitempty"`
	HoldS               float64       `json:"hold_s"`
	RSSKiBIdle          uint64        `json:"rss_kib_idle,omitempty"`
	RSSKiBOpen          uint64        `json:"rss_kib_open,omitempty"`
	RSSKiBHeld          uint64        `json:"rss_kib_held,omitempty"`
	RSSKiBClosed        uint64        `json:"rss_kib_closed,omitempty"`
	RSSKiBPerStream     float64       `json:"rss_kib_per_stream,omitempty"`
	RSSAnonKiBIdle      uint64        `json:"rss_anon_kib_idle,omitempty"`
	RSSAnonKiBHeld      uint64        `json:"rss_anon_kib_held,omitempty"`
	RSSAnonKiBPerStream float64       `json:"rss_anon_kib_per_stream,omitempty"`
	CPUMSOpen           float64       `json:"cpu_ms_open,omitempty"`
	CPUMSPerOpen        float64       `json:"cpu_ms_per_open,omitempty"`
	CPUMSHold           float64       `json:"cpu_ms_hold"`
}

// propagationReport is the result of --mode propagation, times in ms.
type propagationReport struct {
	Streams            int           `json:"streams"`
	Repetitions        int           `json:"repetitions"`
	FromCreateStartMS  *latencyStats `json:"from_create_start_ms,omitempty"`
	FromCreateReturnMS *latencyStats `json:"from_create_return_ms,omitempty"`
	CreateCallMS       *latencyStats `json:"create_call_ms,omitempty"`
	DeleteMS           *latencyStats `json:"delete_ms,omitempty"`
	Missed             int           `json:"missed"`
	MissedDelete       int           `json:"missed_delete"`
}

func (l *latencyStats) String() string {
	if l == nil {
		return "no samples"
	}
	return fmt.Sprintf("p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms  (n=%d)",
		l.P50, l.P90, l.P99, l.P999, l.Max, l.N)
}

// p99 is the p99 of l in ms, or "-" for no samples.
func (l *latencyStats) p99() string {
	if l == nil {
		return "-"
	}
	return fmt.Sprintf("%.3f ms", l.P99)
}

// over says, with several sockets, over how many the workers ran.
func (r *benchReport) over() string {
	if len(r.Sockets) == 0 {
		return ""
	}
	return fmt.Sprintf(" over %d sockets", len(r.Sockets))
}

// printSocketStreams prints each socket's streams (stream, propagation).
func (r *benchReport) printSocketStreams(p func(string, ...any)) {
	for _, k := range r.Sockets {
		p("  socket %s: %d of %d open, errors %d, first SVID p99 %s", k.Socket, k.Count, k.Workers, k.Errors, k.LatencyMS.p99())
	}
}

// label is the name column of the daemon line: "daemon:" or "daemons:".
func (s *serverReport) label() string {
	if len(s.PIDs) > 0 {
		return "daemons: "
	}
	return "daemon:  "
}

// who names the daemons: "pid N", or "pids A+B+C" for their sum.
func (s *serverReport) who() string {
	if len(s.PIDs) == 0 {
		return fmt.Sprintf("pid %d", s.PID)
	}
	ps := make([]string, len(s.PIDs))
	for i, pid := range s.PIDs {
		ps[i] = strconv.Itoa(pid)
	}
	return "pids " + strings.Join(ps, "+")
}

// plural is "1 thing" or "N things".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return strconv.Itoa(n) + " " + thing + "s"
}

func mib(kib uint64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func (r *benchReport) print(w io.Writer) {
	who := "uid " + strconv.Itoa(os.Getuid())
	if r.UIDs != "" {
		who = "uids " + r.UIDs
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	switch r.Mode {
	case benchFetch, benchJWT:
		what := "FetchX509SVID on a fresh connection per call"
		if r.Mode == benchJWT {
			what = "FetchJWTSVID on one open connection per worker"
		}
		p("badge-bench --mode %s: %d workers as %s%s, %s, %s", r.Mode, r.Workers, who, r.over(), what, time.Duration(r.DurationS*float64(time.Second)))
		p("  calls:    %d in %.2f s = %.1f/s, errors: %d", r.Calls, r.ElapsedS, r.CallsPerSec, r.Errors)
		p("  latency:  %s", r.LatencyMS)
		if s := r.Server; s != nil {
			p("  %s %s, CPU %.0f ms (%.0f%% in the kernel) = %.4f ms per call",
				s.label(), s.who(), s.CPUMS, 100*s.CPUMSKernel/max(s.CPUMS, 1), s.CPUMSPerCall)
			p("  RSS:      %s → %s (anonymous %s → %s; the rest is mostly the mmapped database)",
				mib(s.RSSKiBBefore), mib(s.RSSKiBAfter), mib(s.RSSAnonKiBBefore), mib(s.RSSAnonKiBAfter))
		}
		for _, k := range r.Sockets {
			line := fmt.Sprintf("  socket %s: %d calls = %.1f/s by %s, errors %d, p99 %s", k.Socket, k.Count,
				float64(k.Count)/max(r.ElapsedS, 1e-9), plural(k.Workers, "worker"), k.Errors, k.LatencyMS.p99())
			if s := k.Server; s != nil {
				line += fmt.Sprintf("; daemon pid %d, CPU %.0f ms = %.4f ms per call", s.PID, s.CPUMS, s.CPUMSPerCall)
			}
			p("%s", line)
		}
	case benchStream:
		s := r.Streams
		p("badge-bench --mode stream: %d FetchX509SVID streams as %s%s, one connection each", s.Requested, who, r.over())
		p("  opened:   %d of %d in %.2f s; first SVID per stream: %s", s.Open, s.Requested, s.OpenAllS, s.OpenLatencyMS)
		r.printSocketStreams(p)
		if r.Server != nil {
			p("  %s %s, CPU %.0f ms to open = %.4f ms per stream", r.Server.label(), r.Server.who(), s.CPUMSOpen, s.CPUMSPerOpen)
			p("  RSS:      idle %s, all open %s, after %.0f s held %s = %.1f KiB per stream; %s after close",
				mib(s.RSSKiBIdle), mib(s.RSSKiBOpen), s.HoldS, mib(s.RSSKiBHeld), s.RSSKiBPerStream, mib(s.RSSKiBClosed))
			p("            anonymous: idle %s, held %s = %.1f KiB per stream", mib(s.RSSAnonKiBIdle), mib(s.RSSAnonKiBHeld), s.RSSAnonKiBPerStream)
			p("  idle CPU: %.0f ms over %.0f s holding them (%.2f%% of one core)", s.CPUMSHold, s.HoldS, s.CPUMSHold/(s.HoldS*10))
		}
	case benchPropagation:
		s := r.Propagation
		p("badge-bench --mode propagation: %d streams as %s%s, %d new entries one after another", s.Streams, who, r.over(), s.Repetitions)
		r.printSocketStreams(p)
		p("  new entry reached the streams, from before the create call: %s", s.FromCreateStartMS)
		p("                                 from the create call's return: %s", s.FromCreateReturnMS)
		p("  create call:                                                  %s", s.CreateCallMS)
		p("  deleted entry left the streams, from before the delete call:  %s", s.DeleteMS)
		p("  missed (no update within the timeout): %d created, %d deleted, of %d", s.Missed, s.MissedDelete, s.Streams*s.Repetitions)
	}
	if h := r.Host; h != nil {
		p("  host:     %d CPUs, %.2f busy on average: daemon %.2f, badge-bench %.2f, other processes %.2f",
			h.CPUs, h.BusyCores, h.DaemonCores, h.BenchCores, h.OtherCores)
	}
	if r.Errors > 0 {
		p("  errors:   %v; first: %s", r.ErrorCodes, r.FirstError)
	}
	if r.SamplesFile != "" {
		p("  samples:  %d written to %s", r.SamplesWritten, r.SamplesFile)
	}
	for _, n := range r.Notes {
		p("  note: %s", n)
	}
}
