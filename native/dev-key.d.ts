/** Path of the development key file (`MOAT_DEV_KEY_FILE`, or `.moat-dev-key.json` beside this package). */
export declare const devKeyFile: string;
/** The development key (`kid`, `key` as hex), or `undefined` when this build was made with a release key (no file). */
export declare function readDevKey(): { kid: string; key: string } | undefined;
