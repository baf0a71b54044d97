// Package padding decides how big every record and envelope on the wire is.
//
// A Policy is a short ascending list of bucket sizes. The server announces
// its policy in the handshake and every client uses the same one, so an
// observer (or the server itself) learns only which bucket a message fell
// into, never its length. Fewer buckets mean larger anonymity sets.
//
// Entry points: Policy.Bucket picks the bucket for a length; Pad and Unpad
// wrap a payload in a length-prefixed, zero-filled bucket; Split and Join
// carry payloads larger than the biggest bucket as several chunks.
//
// This package imports only the standard library.
package padding
