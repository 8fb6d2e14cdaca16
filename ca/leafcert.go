package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// leafEncoder signs the X.509-SVIDs of one entry revision with one signing
// key without x509.CreateCertificate on every issuance. Everything in the
// to-be-signed certificate but the serial, the validity and the subject
// public key is the same for every SVID of an entry revision, so it is
// encoded once, by x509.CreateCertificate itself (the TBS of a reference
// certificate that is never signed), and spliced around the three fields
// that change. This saves per issuance the reflection-driven ASN.1 encoding
// of the template and the verification of the fresh signature that
// x509.CreateCertificate does to catch faulty signers. Only the authority's in-process ECDSA P-256 key is spliced for:
// Go's software ECDSA, whose nonces are hedged (drawn from the key, the
// digest and fresh randomness), so a faulty signature does not disclose
// the key as a faulty RSA-CRT or deterministic signature can; a hardware or
// KMS signer, the ones that check exists for, keeps x509.CreateCertificate.
//
// Invariant: for the same template, serial, validity, key and signature,
// the encoder's certificate is byte for byte x509.CreateCertificate's
// (TestLeafEncoderMatchesCreateCertificate, FuzzLeafEncoder). newLeafEncoder
// proves it once more at run time: it re-encodes the reference TBS through
// the splice and refuses (issuance then uses
// x509.CreateCertificate) unless the bytes are the same, so an encoding
// change in a later Go release costs speed, never correctness. Templates
// whose encoding depends on the subject key (a CA template, which gets a
// SubjectKeyId derived from it) are refused too.
type leafEncoder struct {
	parent *x509.Certificate // the signing certificate this encoder is for
	key    crypto.Signer     // the signer it was made for
	err    error             // why this signer or template cannot be spliced
	signer *ecdsa.PrivateKey // key, when err is nil

	version    []byte // [0] EXPLICIT INTEGER
	sigIssuer  []byte // signature AlgorithmIdentifier, then issuer Name
	sigAlg     []byte // signature AlgorithmIdentifier alone
	subject    []byte // subject Name
	extensions []byte // [3] EXPLICIT Extensions, and anything else after the key
	p256SPKI   []byte // SubjectPublicKeyInfo of a P-256 key up to its point
}

// errLeafEncoder is wrapped when an entry's reference certificate does not
// have the shape the encoder splices; issuance then uses
// x509.CreateCertificate.
var errLeafEncoder = errors.New("ca: leaf encoder")

// leafEncoderCache holds the encoder of an entry for the signing key last
// used; a rotation replaces it.
type leafEncoderCache struct {
	p atomic.Pointer[leafEncoder]
}

// get returns the encoder of tmpl for parent and signer, or nil when the
// signer is not an in-process ECDSA P-256 key or the template cannot be
// spliced (issuance then uses x509.CreateCertificate).
func (c *leafEncoderCache) get(tmpl *x509.Certificate, parent *x509.Certificate, signer crypto.Signer) *leafEncoder {
	enc := c.p.Load()
	if enc == nil || enc.parent != parent || enc.key != signer {
		var err error
		if enc, err = newLeafEncoder(tmpl, parent, signer); err != nil {
			// Remembered, so that each issuance does not try again.
			enc = &leafEncoder{parent: parent, key: signer, err: err}
		}
		c.p.Store(enc)
	}
	if enc.err != nil {
		return nil
	}
	return enc
}

// newLeafEncoder has x509.CreateCertificate encode the TBS of a reference
// certificate of tmpl for parent (catching it at the signer, so that the
// authority signs nothing: see tbsCapture) and keeps the parts that do not
// change between issuances, after checking that splicing the reference's
// serial, validity and key back in gives the same bytes.
func newLeafEncoder(tmpl, parent *x509.Certificate, signer crypto.Signer) (*leafEncoder, error) {
	key, ok := signer.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: signer is not an in-process ECDSA P-256 key", errLeafEncoder)
	}
	if tmpl.IsCA {
		// x509.CreateCertificate derives a CA's SubjectKeyId from its key.
		return nil, fmt.Errorf("%w: CA template", errLeafEncoder)
	}
	if tmpl.SignatureAlgorithm != x509.UnknownSignatureAlgorithm && tmpl.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		return nil, fmt.Errorf("%w: signature algorithm %v", errLeafEncoder, tmpl.SignatureAlgorithm)
	}
	refKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ref := *tmpl
	ref.SerialNumber = big.NewInt(1)
	ref.NotBefore = parent.NotBefore
	ref.NotAfter = parent.NotAfter
	capture := &tbsCapture{pub: key.Public()}
	if _, err := x509.CreateCertificate(rand.Reader, &ref, parent, refKey.Public(), capture); !errors.Is(err, errTBSCaptured) || capture.tbs == nil {
		return nil, fmt.Errorf("%w: reference certificate: %v", errLeafEncoder, err)
	}
	enc := &leafEncoder{parent: parent, key: signer, signer: key}
	in := cryptobyte.String(capture.tbs)
	var tbs, version, serial, sigAlg, issuer, validity, subject, spki cryptobyte.String
	if !in.ReadASN1(&tbs, cbasn1.SEQUENCE) || !in.Empty() ||
		!tbs.ReadASN1Element(&version, cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!tbs.ReadASN1Element(&serial, cbasn1.INTEGER) ||
		!tbs.ReadASN1Element(&sigAlg, cbasn1.SEQUENCE) ||
		!tbs.ReadASN1Element(&issuer, cbasn1.SEQUENCE) ||
		!tbs.ReadASN1Element(&validity, cbasn1.SEQUENCE) ||
		!tbs.ReadASN1Element(&subject, cbasn1.SEQUENCE) ||
		!tbs.ReadASN1Element(&spki, cbasn1.SEQUENCE) {
		return nil, fmt.Errorf("%w: unexpected TBS layout", errLeafEncoder)
	}
	if !bytes.Equal(sigAlg, ecdsaWithSHA256) {
		return nil, fmt.Errorf("%w: signature algorithm %x", errLeafEncoder, []byte(sigAlg))
	}
	enc.version = version
	enc.sigAlg = sigAlg
	enc.sigIssuer = append(append([]byte{}, sigAlg...), issuer...)
	enc.subject = subject
	enc.extensions = tbs
	// A P-256 SubjectPublicKeyInfo is the same bytes up to the
	// uncompressed point, which ends it.
	refPoint, err := refKey.PublicKey.Bytes()
	if err != nil {
		return nil, err
	}
	if !bytes.HasSuffix(spki, refPoint) {
		return nil, fmt.Errorf("%w: unexpected SubjectPublicKeyInfo layout", errLeafEncoder)
	}
	enc.p256SPKI = spki[:len(spki)-len(refPoint)]
	// The splice must give back x509.CreateCertificate's TBS, byte for
	// byte, and a certificate that parses back into it.
	refTBS, err := enc.tbs(ref.SerialNumber, ref.NotBefore, ref.NotAfter, &refKey.PublicKey)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(refTBS, capture.tbs) {
		return nil, fmt.Errorf("%w: the spliced TBS differs from x509.CreateCertificate's", errLeafEncoder)
	}
	sig := []byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01} // the shape of a signature, for the check
	der, err := enc.certificate(refTBS, sig, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errLeafEncoder, err)
	}
	if c, err := x509.ParseCertificate(der); err != nil || !bytes.Equal(c.RawTBSCertificate, refTBS) ||
		c.SignatureAlgorithm != x509.ECDSAWithSHA256 || !bytes.Equal(c.Signature, sig) {
		return nil, fmt.Errorf("%w: the spliced certificate does not parse back (%v)", errLeafEncoder, err)
	}
	return enc, nil
}

// ecdsaWithSHA256 is the DER AlgorithmIdentifier of ECDSA with SHA-256
// (RFC 5758, section 3.2: no parameters).
var ecdsaWithSHA256 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}

// errTBSCaptured is what tbsCapture answers instead of a signature.
var errTBSCaptured = errors.New("ca: TBS captured, not signed")

// tbsCapture stands in for the authority's signer when a leafEncoder is
// made: it has the signer's public key, so that x509.CreateCertificate
// accepts it for the parent, and it records the to-be-signed bytes
// x509.CreateCertificate hands it (crypto.MessageSigner) and refuses to
// sign them. The reference certificate is never signed: no certificate of
// the CA exists with its serial, validity or throwaway key.
type tbsCapture struct {
	pub crypto.PublicKey
	tbs []byte
}

func (c *tbsCapture) Public() crypto.PublicKey { return c.pub }

func (c *tbsCapture) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errTBSCaptured
}

func (c *tbsCapture) SignMessage(_ io.Reader, msg []byte, _ crypto.SignerOpts) ([]byte, error) {
	c.tbs = bytes.Clone(msg)
	return nil, errTBSCaptured
}

// tbsOverhead bounds the TBS bytes that are not the encoder's parts or a
// SubjectPublicKeyInfo of another curve than P-256: headers, a serial of
// up to 21 octets, the validity, a P-256 SubjectPublicKeyInfo.
const tbsOverhead = 256

// errLeafSerial is returned for a serial x509.CreateCertificate would
// refuse too.
var errLeafSerial = errors.New("ca: leaf encoder: serial number must be positive")

// sign returns the DER certificate for serial, the validity and pub, signed
// with the encoder's key (x509.CreateCertificate's bytes for the same
// inputs and signature), followed by chain.
func (enc *leafEncoder) sign(serial *big.Int, notBefore, notAfter time.Time, pub *ecdsa.PublicKey, chain []byte) ([]byte, error) {
	tbs, err := enc.tbs(serial, notBefore, notAfter, pub)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, enc.signer, digest[:])
	if err != nil {
		return nil, fmt.Errorf("ca: signing SVID: %w", err)
	}
	return enc.certificate(tbs, sig, chain)
}

// tbs returns the DER TBSCertificate for serial, the validity and pub.
func (enc *leafEncoder) tbs(serial *big.Int, notBefore, notAfter time.Time, pub *ecdsa.PublicKey) ([]byte, error) {
	if serial == nil || serial.Sign() < 0 {
		// x509.CreateCertificate refuses a negative serial, and would
		// draw one of its own for nil.
		return nil, errLeafSerial
	}
	// The subject key: a P-256 point after the prefix every P-256 key
	// shares, other curves by the standard library.
	var spki, point []byte
	var err error
	if pub.Curve == elliptic.P256() {
		point, err = pub.Bytes()
	} else {
		spki, err = x509.MarshalPKIXPublicKey(pub)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: subject key: %w", errLeafEncoder, err)
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, tbsOverhead+len(enc.sigIssuer)+len(enc.subject)+len(enc.extensions)+len(spki)))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(enc.version)
		b.AddASN1BigInt(serial)
		b.AddBytes(enc.sigIssuer)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addValidityTime(b, notBefore)
			addValidityTime(b, notAfter)
		})
		b.AddBytes(enc.subject)
		if point != nil {
			b.AddBytes(enc.p256SPKI)
			b.AddBytes(point)
		} else {
			b.AddBytes(spki)
		}
		b.AddBytes(enc.extensions)
	})
	tbs, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("%w: encoding TBS: %w", errLeafEncoder, err)
	}
	return tbs, nil
}

// certificate returns the DER Certificate of tbs and its ASN.1 ECDSA
// signature sig, followed by chain.
func (enc *leafEncoder) certificate(tbs, sig, chain []byte) ([]byte, error) {
	c := cryptobyte.NewBuilder(make([]byte, 0, len(tbs)+len(enc.sigAlg)+len(sig)+16+len(chain)))
	c.AddASN1(cbasn1.SEQUENCE, func(c *cryptobyte.Builder) {
		c.AddBytes(tbs)
		c.AddBytes(enc.sigAlg)
		c.AddASN1BitString(sig)
	})
	c.AddBytes(chain)
	return c.Bytes()
}

// addValidityTime appends t as crypto/x509 (through encoding/asn1) encodes a
// validity bound: UTCTime for the years 1950 to 2049, GeneralizedTime
// otherwise (RFC 5280, section 4.1.2.5), in UTC, to the second.
func addValidityTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC()
	if y := t.Year(); y >= 1950 && y < 2050 {
		b.AddASN1UTCTime(t)
		return
	}
	b.AddASN1GeneralizedTime(t)
}
