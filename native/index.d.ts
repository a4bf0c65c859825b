import type { NativeBinding } from '@moat/protocol/support';

// The addon's interface is declared once, in @moat/protocol/support, and shared with the layers that use it.
export type { NativeBinding, NativeEvent, NativeInstall, NativeInstallOpenOptions, NativeRequestOptions } from '@moat/protocol/support';

/** The loaded addon, or `undefined` when it is missing, broken or disabled. */
export declare const native: NativeBinding | undefined;
/** Why the addon is not loaded. */
export declare const loadError: Error | undefined;
// Stamp outcomes by the code passed with `headers`: STAMP_RESULTS in @moat/protocol/support.
