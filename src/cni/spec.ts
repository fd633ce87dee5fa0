// Constants of the Container Network Interface specification (github.com/containernetworking/cni,
// SPEC.md, versions 1.0.0 and 1.1.0; 0.4.0 configurations are accepted too).

/** The version this plugin speaks, and every version whose configurations it accepts. */
export const CNI_VERSION = '1.0.0';
export const SUPPORTED_VERSIONS = ['0.4.0', '1.0.0', '1.1.0'] as const;
export type SupportedVersion = (typeof SUPPORTED_VERSIONS)[number];

/** CNI_COMMAND values. STATUS and GC are spec 1.1. */
export const COMMANDS = ['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC'] as const;
export type CniCommand = (typeof COMMANDS)[number];

/** Well-known error codes (SPEC.md "Error"); 50 and 51 are STATUS codes of 1.1. */
export const CNI_ERR = {
  INCOMPATIBLE_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  CONTAINER_UNKNOWN: 3,
  INVALID_ENV: 4,
  IO_FAILURE: 5,
  DECODE_FAILURE: 6,
  INVALID_NETWORK_CONFIG: 7,
  TRY_AGAIN_LATER: 11,
  PLUGIN_NOT_AVAILABLE: 50,
  LIMITED_CONNECTIVITY: 51,
} as const;

/** The GC key listing the attachments that are still valid (spec 1.1). */
export const VALID_ATTACHMENTS_KEY = 'cni.dev/valid-attachments';

/** The error object a plugin prints on stdout, exiting non-zero. */
export interface CniErrorObject {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

export class CniError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details?: string,
  ) {
    super(message);
    this.name = 'CniError';
  }

  toObject(cniVersion: string): CniErrorObject {
    return {
      cniVersion,
      code: this.code,
      msg: this.message,
      ...(this.details !== undefined ? { details: this.details } : {}),
    };
  }
}
