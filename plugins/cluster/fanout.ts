/** Delivers, here, a room frame that was sent on another instance. */
export type RoomFrameHandler = (room: string, frame: string, exceptConnectionId?: string) => void
/** Delivers, here, a direct-message frame sent on another instance to a client connected here. */
export type ClientFrameHandler = (clientId: string, frame: string) => void
/** Members of a room whose instance died: they are no longer members anywhere. */
export type MembersGoneHandler = (room: string, clientIds: string[]) => void

/**
 * What rooms and direct messages need from "the other instances": frames to
 * them, frames from them, room membership and client reachability. One node
 * uses `LocalFanout` (nobody else: every call is a no-op); with REDIS_URL the
 * Redis one (plugins/cluster/bus.ts). Rooms and direct messages receive it at
 * construction and call it on their own delivery path.
 */
export interface Fanout {
  readonly kind: 'local' | 'redis'
  /** Frames for rooms, sent from other instances, go to `fn`. */
  onRoomFrame (fn: RoomFrameHandler): void
  /** Direct-message frames, sent from other instances, go to `fn`. */
  onClientFrame (fn: ClientFrameHandler): void
  /** Members of crashed instances, removed once their instance's TTL expired, go to `fn` (once, cluster-wide). */
  onMembersGone (fn: MembersGoneHandler): void

  /** Once per membership (or join in flight): resolves when this instance receives the room's frames from others. */
  subscribeRoom (room: string): Promise<void>
  /** The membership (or failed join) `subscribeRoom` was for is over. */
  unsubscribeRoom (room: string): void
  /** Sends a room frame to the other instances with members in the room. */
  publishToRoom (room: string, frame: string, exceptConnectionId?: string): void
  /** A client's first connection here is in the room: resolves once the other instances see it as a member (at once while Redis is down: the restore writes it). */
  memberJoined (room: string, clientId: string): Promise<void>
  /** A client's last connection here left the room. */
  memberLeft (room: string, clientId: string): void
  /** The room's members on the other live instances. */
  members (room: string): Promise<string[]>

  /** A connection of the client opens here: resolves once a message sent from any instance reaches it (before its `welcome`). */
  clientConnected (clientId: string): Promise<void>
  /** A connection of the client closed here (or never got its welcome). */
  clientDisconnected (clientId: string): void
  /** Sends a direct-message frame to the client's connections on other instances; resolves with how many it reached. */
  publishToClient (clientId: string, frame: string): Promise<number>
}

/** One instance: there is nobody to fan out to. */
export class LocalFanout implements Fanout {
  readonly kind = 'local'
  onRoomFrame (): void {}
  onClientFrame (): void {}
  onMembersGone (): void {}
  async subscribeRoom (): Promise<void> {}
  unsubscribeRoom (): void {}
  publishToRoom (): void {}
  async memberJoined (): Promise<void> {}
  memberLeft (): void {}
  async members (): Promise<string[]> {
    return []
  }

  async clientConnected (): Promise<void> {}
  clientDisconnected (): void {}
  async publishToClient (): Promise<number> {
    return 0
  }
}
