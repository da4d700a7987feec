// Package respwriter holds the wrapper cairn's HTTP handlers use to learn
// whether a response has started, which decides how a late failure ends:
// an error document while nothing is out, a dropped connection after.
package respwriter
