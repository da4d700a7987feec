package access

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Tokens is a set of bearer tokens. A nil *Tokens lets every request
// through.
type Tokens struct {
	// Tokens are kept as hashes, so that comparing one takes the same time
	// whatever its length and whichever bytes match.
	hashes [][sha256.Size]byte
}

// LoadTokens reads a token file: one token per line; blank lines and lines
// starting with # are skipped, and surrounding whitespace is trimmed.
func LoadTokens(path string) (*Tokens, error) {
	lines, err := readLines(path)
	if err != nil {
		return nil, fmt.Errorf("read token file: %w", err)
	}
	t := &Tokens{}
	for _, l := range lines {
		t.hashes = append(t.hashes, sha256.Sum256([]byte(l)))
	}
	if len(t.hashes) == 0 {
		return nil, fmt.Errorf("token file %s holds no token", path)
	}
	return t, nil
}

// ReadToken reads the first token of a token file, for clients.
func ReadToken(path string) (string, error) {
	lines, err := readLines(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	if len(lines) == 0 {
		return "", fmt.Errorf("token file %s holds no token", path)
	}
	return lines[0], nil
}

func readLines(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines, sc.Err()
}

// Why a request was refused.
var (
	errNoToken  = errors.New("this port needs a bearer token (header authorization: Bearer TOKEN)")
	errBadToken = errors.New("the bearer token is not valid for this port")
)

// check returns nil if the Authorization header value carries one of the
// tokens. Every token is compared, so the time taken does not tell which,
// if any, matched.
func (t *Tokens) check(authorization string) error {
	if t == nil {
		return nil
	}
	scheme, token, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return errNoToken
	}
	h := sha256.Sum256([]byte(strings.TrimSpace(token)))
	match := 0
	for i := range t.hashes {
		match |= subtle.ConstantTimeCompare(h[:], t.hashes[i][:])
	}
	if match == 0 {
		return errBadToken
	}
	return nil
}
