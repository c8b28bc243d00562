// Command benchtable turns the output of the sluice peer benchmarks (go
// test -bench, any number of runs concatenated) into one Markdown table
// per backend: the median of each figure over the runs, and each
// contender's throughput relative to sluice measured in the same runs.
//
// Usage:
//
//	go test -run '^$' -bench . -benchmem | tee out.txt
//	go run ./cmd/benchtable < out.txt
//
// A benchmark name is Benchmark<Backend>/<case...>/<contender>; the
// contender named "sluice" is the reference of its case. Skipped and
// failed benchmarks are listed under their table with the reason.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	date := flag.String("date", time.Now().UTC().Format("2006-01-02"), "date to print in the heading")
	goals := flag.Bool("targets", true, "after the tables, say which targets of the comparison are met")
	flag.Parse()
	res, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
	if len(res.tables) == 0 && len(res.notes) == 0 {
		fmt.Fprintln(os.Stderr, "benchtable: no benchmark results in the input")
		os.Exit(1)
	}
	write(os.Stdout, res, *date, runtime.NumCPU())
	if *goals {
		writeTargets(os.Stdout, res)
	}
}

// results is everything read from go test's output.
type results struct {
	cpu       string
	procs     int
	runs      int                 // most samples seen for one benchmark
	tables    []*table            // in order of first appearance
	byName    map[string]*table   // backend -> table
	notes     map[string][]string // backend -> skip and failure lines, deduplicated
	noteOrder []string            // backends with notes, in order of appearance
}

type table struct {
	backend string
	cases   []string                   // in order of first appearance
	rows    map[string][]*row          // case -> rows in order of appearance
	units   map[string]bool            // every unit seen in this table
	index   map[string]map[string]*row // case -> contender -> row
}

type row struct {
	contender string
	samples   map[string][]float64 // unit -> values, one per run
}

var (
	benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-(\d+))?\s+(\d+)\s+(.*\S)\s*$`)
	verdict   = regexp.MustCompile(`--- (SKIP|FAIL|BENCH): (Benchmark\S+?)(?:-\d+)?$`)
	logLine   = regexp.MustCompile(`^\s+(?:\S+\.go:\d+: )?(\S.*)$`)
)

func parse(r io.Reader) (*results, error) {
	res := &results{byName: map[string]*table{}, notes: map[string][]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var pending string // "SKIP name" / "FAIL name" waiting for its message
	for sc.Scan() {
		line := sc.Text()
		if pending != "" {
			if m := logLine.FindStringSubmatch(line); m != nil {
				kind, name, _ := strings.Cut(pending, " ")
				res.note(name, kind, m[1])
				continue
			}
			pending = ""
		}
		if m := verdict.FindStringSubmatch(line); m != nil {
			pending = m[1] + " " + m[2]
			continue
		}
		if cpu, ok := strings.CutPrefix(line, "cpu: "); ok {
			res.cpu = cpu
			continue
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if m[2] != "" {
			res.procs, _ = strconv.Atoi(m[2])
		}
		backend, cas, contender, ok := split(m[1])
		if !ok {
			continue
		}
		rw := res.row(backend, cas, contender)
		if m[3] == "0" {
			continue // gave up before a timed run; its log says why
		}
		fields := strings.Fields(m[4])
		if len(fields)%2 != 0 {
			return nil, fmt.Errorf("%s: odd number of value/unit fields in %q", m[1], m[4])
		}
		for i := 0; i < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%s: value %q: %v", m[1], fields[i], err)
			}
			unit := fields[i+1]
			rw.samples[unit] = append(rw.samples[unit], v)
			res.byName[backend].units[unit] = true
			res.runs = max(res.runs, len(rw.samples[unit]))
		}
	}
	return res, sc.Err()
}

// split cuts "BenchmarkRedis/HotKey/goroutines=1/sluice" into "Redis",
// "HotKey/goroutines=1" and "sluice".
func split(name string) (backend, cas, contender string, ok bool) {
	name = strings.TrimPrefix(name, "Benchmark")
	parts := strings.Split(name, "/")
	if len(parts) < 3 {
		return "", "", "", false
	}
	return parts[0], strings.Join(parts[1:len(parts)-1], "/"), parts[len(parts)-1], true
}

func (res *results) row(backend, cas, contender string) *row {
	t := res.byName[backend]
	if t == nil {
		t = &table{backend: backend, rows: map[string][]*row{}, units: map[string]bool{}, index: map[string]map[string]*row{}}
		res.byName[backend] = t
		res.tables = append(res.tables, t)
	}
	if t.index[cas] == nil {
		t.index[cas] = map[string]*row{}
		t.cases = append(t.cases, cas)
	}
	rw := t.index[cas][contender]
	if rw == nil {
		rw = &row{contender: contender, samples: map[string][]float64{}}
		t.index[cas][contender] = rw
		t.rows[cas] = append(t.rows[cas], rw)
	}
	return rw
}

func (res *results) note(name, kind, msg string) {
	name = strings.TrimPrefix(name, "Benchmark")
	backend, rest, _ := strings.Cut(name, "/")
	text := msg
	if rest != "" {
		text = strings.ReplaceAll(rest, "/", " ") + ": " + msg
	}
	if kind == "FAIL" {
		text = "FAILED: " + text
	}
	if slices.Contains(res.notes[backend], text) {
		return
	}
	if res.notes[backend] == nil {
		res.noteOrder = append(res.noteOrder, backend)
	}
	res.notes[backend] = append(res.notes[backend], text)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// titles names the backends in headings.
var titles = map[string]string{
	"Memory":           "In process (sluice on storage/memory)",
	"Redis":            "Redis",
	"PostgresLogged":   "PostgreSQL, logged tables",
	"PostgresUnlogged": "PostgreSQL, UNLOGGED tables",
	"Bolt":             "bbolt (fsync per transaction)",
}

// column is one figure of a table, shown when any row has its unit.
type column struct {
	unit, head string
	format     func(float64) string
}

var columns = []column{
	{"decisions/s", "decisions/s", count},
	{"ns/op", "ns/decision", sig3}, // shown only where there are no latencies
	{"p50-us", "p50", micros},
	{"p99-us", "p99", micros},
	{"roundtrips/op", "round trips/decision", func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }},
	{"allocs/op", "allocs/decision", func(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }},
}

func write(w io.Writer, res *results, date string, cores int) {
	fmt.Fprintf(w, "Measured %s on one machine: %d cores", date, cores)
	if res.cpu != "" {
		fmt.Fprintf(w, " (%s)", res.cpu)
	}
	if res.procs > 0 {
		fmt.Fprintf(w, ", GOMAXPROCS=%d", res.procs)
	}
	if res.runs > 0 {
		fmt.Fprintf(w, "; each figure is the median of %d run%s", res.runs, map[bool]string{true: "", false: "s"}[res.runs == 1])
	}
	fmt.Fprint(w, ". ")
	fmt.Fprintln(w, "\"sluice ÷ it\" is sluice's decisions per second divided by the contender's in the same runs: above 1, sluice is faster. Figures from another machine or another day are not comparable; the ratios are the point.")
	tables := slices.Clone(res.tables)
	slices.SortStableFunc(tables, func(a, b *table) int { return rank(a.backend) - rank(b.backend) })
	for _, t := range tables {
		fmt.Fprintf(w, "\n### %s\n\n", title(t.backend))
		var cols []column
		for _, c := range columns {
			if t.units[c.unit] && !(c.unit == "ns/op" && t.units["p50-us"]) {
				cols = append(cols, c)
			}
		}
		fmt.Fprint(w, "| case | contender |")
		for i, c := range cols {
			fmt.Fprintf(w, " %s |", c.head)
			if i == 0 && c.unit == "decisions/s" {
				fmt.Fprint(w, " sluice ÷ it |")
			}
		}
		fmt.Fprint(w, "\n|---|---|")
		for i, c := range cols {
			fmt.Fprint(w, "---:|")
			if i == 0 && c.unit == "decisions/s" {
				fmt.Fprint(w, "---:|")
			}
		}
		fmt.Fprintln(w)
		for _, cas := range t.cases {
			ref := t.index[cas]["sluice"]
			for i, rw := range t.rows[cas] {
				label := ""
				if i == 0 {
					label = caseLabel(cas)
				}
				name := rw.contender
				if name == "sluice" {
					name = "**sluice**"
				}
				fmt.Fprintf(w, "| %s | %s |", label, name)
				for j, c := range cols {
					v, ok := rw.samples[c.unit]
					switch {
					case ok:
						fmt.Fprintf(w, " %s |", c.format(median(v)))
					case j == 0 && len(rw.samples) == 0:
						fmt.Fprint(w, " see below |")
					default:
						fmt.Fprint(w, " |")
					}
					if j == 0 && c.unit == "decisions/s" {
						fmt.Fprintf(w, " %s |", ratio(ref, rw))
					}
				}
				fmt.Fprintln(w)
			}
		}
		if notes := res.notes[t.backend]; len(notes) > 0 {
			fmt.Fprintln(w)
			for _, n := range notes {
				fmt.Fprintf(w, "- %s\n", n)
			}
		}
	}
	// Backends that produced notes but no figures (skipped whole).
	skipped := slices.Clone(res.noteOrder)
	slices.SortStableFunc(skipped, func(a, b string) int { return rank(a) - rank(b) })
	for _, b := range skipped {
		if res.byName[b] != nil {
			continue
		}
		fmt.Fprintf(w, "\n### %s\n\n", title(b))
		for _, n := range res.notes[b] {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}

// order is the order of the tables; others follow in order of appearance.
var order = []string{"Memory", "Redis", "PostgresLogged", "PostgresUnlogged", "Bolt"}

func rank(backend string) int {
	if i := slices.Index(order, backend); i >= 0 {
		return i
	}
	return len(order)
}

func title(backend string) string {
	if t, ok := titles[backend]; ok {
		return t
	}
	return backend
}

// caseLabel turns "HotKey/goroutines=64" into "hot key, 64 goroutines".
func caseLabel(cas string) string {
	parts := strings.Split(cas, "/")
	for i, p := range parts {
		switch {
		case p == "HotKey":
			parts[i] = "hot key"
		case p == "DenyExhausted":
			parts[i] = "denial, exhausted key"
		case strings.HasPrefix(p, "Keys"):
			parts[i] = strings.TrimPrefix(p, "Keys") + " keys"
		case strings.HasPrefix(p, "goroutines="):
			n := strings.TrimPrefix(p, "goroutines=")
			parts[i] = n + " goroutine" + map[bool]string{true: "", false: "s"}[n == "1"]
		}
	}
	return strings.Join(parts, ", ")
}

func ratio(ref, rw *row) string {
	if ref == nil {
		return ""
	}
	a, b := median(ref.samples["decisions/s"]), median(rw.samples["decisions/s"])
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return ""
	}
	return strconv.FormatFloat(a/b, 'f', 2, 64)
}

// count formats a rate with three significant figures: 950, 12.3k, 4.56M.
func count(v float64) string {
	switch r := round3(v); {
	case r >= 1e6:
		return sig3(v/1e6) + "M"
	case r >= 1e3:
		return sig3(v/1e3) + "k"
	}
	return sig3(v)
}

// micros formats a latency given in microseconds.
func micros(v float64) string {
	switch r := round3(v); {
	case r >= 1000:
		return sig3(v/1000) + " ms"
	case r >= 1:
		return sig3(v) + " µs"
	}
	return sig3(v*1000) + " ns"
}

// round3 rounds v to three significant digits. The unit and the precision
// of a figure are chosen for it rounded so, as it will print: 999.6 is
// 1.00k, not 1000, and 999,999 is 1.00M, not 1000k.
func round3(v float64) float64 {
	// The same rounding as the printing's: strconv's, to the nearest (ties
	// to even) of the exact binary value. What FormatFloat writes, NaN and
	// infinities included, ParseFloat reads back without error.
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 3, 64), 64)
	return r
}

func sig3(v float64) string {
	switch r := round3(v); {
	case r >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case r >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
