// Package analysis finds where the time and the failures of traces go: the
// critical path of one trace, the critical paths of many aggregated per
// operation, the attributes that set slow or failing traces apart from the
// others, and a diagnosis that ranks the operations and attributes most
// likely to have caused a regression between two windows. Every analysis is
// a pure function of traces already read, so that the CLI, the query server
// and the tests share it, and none needs a store.
package analysis
