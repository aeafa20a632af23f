package portal

import (
	"net/url"
	"sort"
	"sync"
)

// pager is where one page of a sorted list stands, and the links around
// it; list pages embed it, so their templates read .From, .NextURL...
type pager struct {
	Total, From, To            int
	FirstURL, PrevURL, NextURL string
}

// pageOf is the page of names (sorted in place) that follows after, at most
// size long, with links on base (a path: the page travels in its "after"
// query parameter). The plugin's lists answer every name at once, so
// paging them is the portal's: only the shown page's records get read.
func pageOf(names []string, after string, size int, base string) ([]string, pager) {
	sort.Strings(names)
	start := sort.Search(len(names), func(i int) bool { return names[i] > after })
	end := min(len(names), start+size)
	p := pager{Total: len(names), From: start + 1, To: end}
	link := func(after string) string {
		if after == "" {
			return base
		}
		return base + "?" + url.Values{"after": {after}}.Encode()
	}
	if start > 0 {
		p.FirstURL = base
		prev := ""
		if i := start - size; i > 0 {
			prev = names[i-1]
		}
		p.PrevURL = link(prev)
	}
	if end < len(names) {
		p.NextURL = link(names[end-1])
	}
	return names[start:end], p
}

// each runs f(0..n-1) on at most keyReadWorkers goroutines: the reads of
// a page's rows, one Vault round trip each. A panic in f fails that row
// (onPanic), not the process: the handler's recover does not reach here.
func each(n int, f func(i int), onPanic func(i int, err error)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(keyReadWorkers, n) {
		wg.Go(func() {
			for i := range next {
				if err := guarded(func() error { f(i); return nil }); err != nil {
					onPanic(i, err)
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}
