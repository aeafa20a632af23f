package notify

import "container/heap"

// pending is the dispatcher's in-memory schedule: deliveries ordered by
// NextAt, findable by id so a re-enqueued delivery replaces its older copy.
// (The SDK's queue deep-copies every value on push, which would copy each
// event body on every retry.) Callers hold the dispatcher's lock.
type pending struct {
	items []*Delivery
	index map[string]int
}

func newPending() *pending { return &pending{index: map[string]int{}} }

func (p *pending) Len() int           { return len(p.items) }
func (p *pending) Less(i, j int) bool { return p.items[i].NextAt.Before(p.items[j].NextAt) }
func (p *pending) Swap(i, j int) {
	p.items[i], p.items[j] = p.items[j], p.items[i]
	p.index[p.items[i].ID] = i
	p.index[p.items[j].ID] = j
}
func (p *pending) Push(x any) {
	d := x.(*Delivery)
	p.index[d.ID] = len(p.items)
	p.items = append(p.items, d)
}
func (p *pending) Pop() any {
	n := len(p.items) - 1
	d := p.items[n]
	p.items[n] = nil
	p.items = p.items[:n]
	delete(p.index, d.ID)
	return d
}

// put adds d, replacing a queued delivery with the same id.
func (p *pending) put(d *Delivery) {
	if i, ok := p.index[d.ID]; ok {
		p.items[i] = d
		heap.Fix(p, i)
		return
	}
	heap.Push(p, d)
}

func (p *pending) has(id string) bool { _, ok := p.index[id]; return ok }

// peek returns the earliest delivery without removing it.
func (p *pending) peek() *Delivery {
	if len(p.items) == 0 {
		return nil
	}
	return p.items[0]
}

func (p *pending) pop() *Delivery { return heap.Pop(p).(*Delivery) }
