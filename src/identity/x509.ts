// The one place @peculiar/x509 is loaded. It resolves its algorithm table through tsyringe,
// which needs the Reflect metadata polyfill evaluated first; ES modules evaluate their
// imports in order, so importing this module (never '@peculiar/x509' directly) is enough.
import 'reflect-metadata';

export * from '@peculiar/x509';
