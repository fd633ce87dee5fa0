// Names of tenants, workloads and hosts as every API and store accepts them: lower-case
// DNS-label-like, 1..63 characters of a-z, 0-9, '.', '_', '-', starting and ending
// alphanumeric. The NIC, the vSwitch, the policy engine and the orchestrator all use this one
// definition, so a name one of them accepts is accepted by the others.
import { z } from 'zod';

export const NAME_RE = /^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$/;

export const nameSchema = z
  .string()
  .regex(NAME_RE, 'must be 1..63 of a-z, 0-9, ".", "_", "-", starting and ending alphanumeric');
