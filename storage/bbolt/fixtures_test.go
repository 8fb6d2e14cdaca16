package bbolt

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/badge-dev/badge/storage"
)

var update = flag.Bool("update", false, "rewrite the database fixtures in testdata/")

// futureSchema is the schema version of future-schema.db: far enough
// ahead that adding migrations does not make the fixture current.
const futureSchema = 1000

// fixtures builds each file under testdata/. They are committed, so that a
// change in bbolt or in this package cannot silently change what is tested;
// rebuild them with go test -run TestFixtures -update.
var fixtures = map[string]func(t *testing.T, path string){
	// A crash between creating and initialising the file leaves it empty.
	"empty.db": func(t *testing.T, path string) { writeFile(t, path, nil) },
	// Shorter than the two meta pages.
	"short.db": func(t *testing.T, path string) { writeFile(t, path, randomBytes(100)) },
	// Not a bbolt file at all.
	"random.db": func(t *testing.T, path string) { writeFile(t, path, randomBytes(32<<10)) },
	// Both meta pages fail their checksum.
	"bad-checksum.db": func(t *testing.T, path string) {
		data := readFile(t, validFixture(t, 1))
		// The transaction id sits at offset 64 of each meta page; the
		// checksum covers it.
		data[64] ^= 0xff
		data[4096+64] ^= 0xff
		writeFile(t, path, data)
	},
	// A database cut short, as by a full disk or a bad copy.
	"truncated.db": func(t *testing.T, path string) {
		data := readFile(t, validFixture(t, 200))
		writeFile(t, path, data[:len(data)*2/5/4096*4096+1000])
	},
	// Cut short, but with the freelist and the roots in the part that
	// is left: bbolt faults on the first read past the end of the file.
	"truncated-tail.db": func(t *testing.T, path string) {
		src := validFixture(t, 200)
		const cut = 12 // pages kept
		db, err := bolt.Open(src, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Small updates move the freelist to a low, reused page.
		for i := 0; ; i++ {
			if i == 100 {
				t.Fatal("freelist did not move below the cut")
			}
			err := db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket(bucketMeta).Put([]byte("pad"), []byte(strconv.Itoa(i)))
			})
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(src)
			if err != nil {
				t.Fatal(err)
			}
			m0, _ := readMeta(f, 0)
			m1, _ := readMeta(f, 4096)
			f.Close()
			cur := m0
			if m1.txid > m0.txid {
				cur = m1
			}
			if cur.freelist < cut {
				break
			}
		}
		db.Close()
		writeFile(t, path, readFile(t, src)[:cut*4096])
	},
	// Valid meta pages, but one leaf page of entries is overwritten.
	"bad-page.db": func(t *testing.T, path string) {
		src := validFixture(t, 200)
		leaf := lastLeafPage(t, src, nil)
		data := readFile(t, src)
		copy(data[leaf*4096:(leaf+1)*4096], randomBytes(4096))
		writeFile(t, path, data)
	},
	// A badge layout written without a stored freelist (as etcd writes
	// its files), and with a damaged page: bbolt would crash the process
	// rebuilding the freelist.
	"no-freelist.db": func(t *testing.T, path string) {
		opts := &bolt.Options{NoFreelistSync: true}
		db, err := bolt.Open(path, 0o600, opts)
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			if err := createBuckets(tx, buckets...); err != nil {
				return err
			}
			if err := tx.Bucket(bucketMeta).Put(keySchemaVersion, []byte(strconv.Itoa(schemaVersion))); err != nil {
				return err
			}
			for i := range 40 {
				if err := tx.Bucket(bucketEntries).Put([]byte(strconv.Itoa(i)), make([]byte, 200)); err != nil {
					return err
				}
			}
			return nil
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		leaf := lastLeafPage(t, path, opts)
		data := readFile(t, path)
		data[leaf*4096+8] = 0x04 // page flags: a meta page where a leaf should be
		writeFile(t, path, data)
	},
	// A bbolt file of another program.
	"not-badge.db": func(t *testing.T, path string) {
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket([]byte("widgets"))
			if err != nil {
				return err
			}
			return b.Put([]byte("w1"), []byte("blue"))
		})
		if err != nil {
			t.Fatal(err)
		}
	},
	// Written by a release with a newer layout.
	"future-schema.db": func(t *testing.T, path string) {
		setMeta(t, validFixtureAt(t, path, 3), strconv.Itoa(futureSchema))
	},
	// The version record is damaged.
	"bad-version.db": func(t *testing.T, path string) {
		setMeta(t, validFixtureAt(t, path, 3), "v1")
	},
	// One entry record is not JSON; the file itself is sound.
	"bad-record.db": func(t *testing.T, path string) {
		validFixtureAt(t, path, 3)
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketEntries).Put([]byte("entry-0001"), []byte(`{"id":"entry-0001","spiffe_id":`))
		})
		if err != nil {
			t.Fatal(err)
		}
	},
}

func TestFixtures(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rebuild testdata/")
	}
	for name, build := range fixtures {
		path := filepath.Join("testdata", name)
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		build(t, path)
	}
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func randomBytes(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// validFixture writes a sound database with n entries to a temporary file.
func validFixture(t *testing.T, n int) string {
	return validFixtureAt(t, filepath.Join(t.TempDir(), "valid.db"), n)
}

func validFixtureAt(t *testing.T, path string, n int) string {
	t.Helper()
	s, err := Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// One transaction, so that the pages are dense and the file small.
	err = s.db.Update(func(tx *bolt.Tx) error {
		for i := range n {
			e := storage.Entry{
				ID:        fmt.Sprintf("entry-%04d", i),
				SPIFFEID:  fmt.Sprintf("spiffe://example.org/service/%d", i),
				Selectors: []string{"unix:uid:" + strconv.Itoa(1000+i), "unix:path:/usr/local/bin/service-with-a-long-name"},
				CreatedAt: created.Add(time.Duration(i) * time.Second),
				Revision:  1,
			}
			if err := tx.Bucket(bucketEntries).Put([]byte(e.ID), jsonOf(t, e)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func setMeta(t *testing.T, path, version string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchemaVersion, []byte(version))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// lastLeafPage returns the highest-numbered leaf page in use.
func lastLeafPage(t *testing.T, path string, opts *bolt.Options) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	leaf := -1
	err = db.View(func(tx *bolt.Tx) error {
		for id := 2; ; id++ {
			p, err := tx.Page(id)
			if err != nil {
				return err
			}
			if p == nil {
				return nil
			}
			if p.Type == "leaf" {
				leaf = id
			}
		}
	})
	if err != nil || leaf < 0 {
		t.Fatalf("no leaf page in %s: %v", path, err)
	}
	return leaf
}

// jsonOf is a helper for building raw records in tests.
func jsonOf(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
