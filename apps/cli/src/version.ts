/** Client version, written into the attribution block and the user agent. */
export const CLIENT_VERSION = '1.4.2';
