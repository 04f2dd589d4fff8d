// Package shop is the buggy library code some programs of the corpus share: findings in it
// must be attributed to example.com/gobugs/internal/shop, the main module read from build info.
package shop

import "sync"

// Inventory holds stock per item.
type Inventory struct {
	mu    sync.Mutex
	stock map[string]int
}

// NewInventory makes an inventory with some stock.
func NewInventory() *Inventory {
	return &Inventory{stock: map[string]int{"apple": 1 << 30, "pear": 1 << 30}}
}

// Count returns the stock of item.
func (inv *Inventory) Count(item string) int {
	inv.mu.Lock() // want doublelock
	defer inv.mu.Unlock()
	return inv.stock[item]
}

// Reserve takes n of item; it reads the count through Count while holding the lock: a double lock.
func (inv *Inventory) Reserve(item string, n int) bool {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if inv.Count(item) < n {
		return false
	}
	inv.stock[item] -= n
	return true
}

// Ledger records the orders of a shop without a lock: a data race when two goroutines record.
type Ledger struct {
	Orders int
}

// Record counts one order.
func (l *Ledger) Record() {
	l.Orders++ // want racefield
}
