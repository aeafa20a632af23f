//go:build race

package keyformat

func init() { raceEnabled = true }
