// Package mls implements the Messaging Layer Security protocol (RFC 9420).
//
// This file is a placeholder for the package guide; see the sections below
// as the implementation lands.
package mls
