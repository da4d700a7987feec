// Package radix sorts records by a 64-bit key in linear time. A cut sorts a
// million search-index postings and hundreds of thousands of pairing keys,
// and reading a large trace sorts its spans by start time; comparison sorts
// took several times longer in each.
package radix
