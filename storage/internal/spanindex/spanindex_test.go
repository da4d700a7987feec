package spanindex

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// TestAgainstMap checks Index against a map that keeps each ID's first
// position, over traces of random and of structured IDs, reusing one Index
// for traces large and small.
func TestAgainstMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var x Index
	for round := range 200 {
		n := rng.IntN(2000)
		if round%50 == 0 {
			n = 40_000
		}
		ids := make([][8]byte, n)
		for i := range ids {
			switch round % 3 {
			case 0: // random, with repeats
				binary.LittleEndian.PutUint64(ids[i][:], rng.Uint64()%uint64(2*n+1))
			case 1: // differing only in the high bytes
				binary.BigEndian.PutUint64(ids[i][:], uint64(i))
			default:
				binary.LittleEndian.PutUint64(ids[i][:], rng.Uint64())
			}
		}
		x.Reset(n)
		want := map[[8]byte]int{}
		for i, id := range ids {
			x.Add(id, i)
			if _, ok := want[id]; !ok {
				want[id] = i
			}
		}
		for i := range n + 10 {
			var id [8]byte
			if i < n {
				id = ids[i]
			} else {
				binary.LittleEndian.PutUint64(id[:], rng.Uint64())
			}
			pos, ok := x.Find(id)
			wpos, wok := want[id]
			if ok != wok || pos != wpos {
				t.Fatalf("round %d: Find(%x) = %d, %v; want %d, %v", round, id, pos, ok, wpos, wok)
			}
		}
	}
	var empty Index
	if _, ok := empty.Find([8]byte{1}); ok {
		t.Fatal("an empty Index found an ID")
	}
}
