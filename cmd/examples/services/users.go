package services

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	usersv1 "github.com/portico-dev/portico/protos/examples/users/v1"
)

// users is the in-memory UserService. mu guards every field below it.
type users struct {
	usersv1.UnimplementedUserServiceServer

	mu      sync.Mutex
	byName  map[string]*usersv1.User
	avatars map[string]*httpbody.HttpBody
	nextID  int64
}

// NewUsers returns a users service seeded with users/alice (every field set,
// phone contact, a PNG avatar) and users/bob (every field set, Slack contact,
// no avatar). Each call returns an independent store.
func NewUsers() usersv1.UserServiceServer {
	created := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	u := &users{byName: map[string]*usersv1.User{}, avatars: map[string]*httpbody.HttpBody{}, nextID: 3}
	u.byName["users/alice"] = &usersv1.User{
		Name: "users/alice", DisplayName: "Alice", Email: "alice@example.com", Id: 1,
		State: usersv1.State_STATE_ACTIVE, CreateTime: timestamppb.New(created), Nickname: wrapperspb.String("al"),
		Labels: map[string]string{"team": "core", "tier": "gold"},
		Attributes: &structpb.Struct{Fields: map[string]*structpb.Value{
			"plan": structpb.NewStringValue("pro"), "seats": structpb.NewNumberValue(5), "beta": structpb.NewBoolValue(true),
		}},
		Contact: &usersv1.User_Phone{Phone: "+1-555-0100"}, Roles: []string{"admin", "dev"},
		// Visits is above 2^53 on purpose: JSON must carry it as a string.
		Score: 4.5, Verified: true, Visits: 9007199254740993,
		Profile: &usersv1.Profile{Bio: "Builds things", Location: "Lisbon"},
	}
	u.byName["users/bob"] = &usersv1.User{
		Name: "users/bob", DisplayName: "Bob", Email: "bob@example.com", Id: 2,
		State: usersv1.State_STATE_SUSPENDED, CreateTime: timestamppb.New(created.Add(24 * time.Hour)), Nickname: wrapperspb.String("bobby"),
		Labels: map[string]string{"team": "edge"},
		Attributes: &structpb.Struct{Fields: map[string]*structpb.Value{
			"plan": structpb.NewStringValue("free"), "trial": structpb.NewNullValue(),
		}},
		Contact: &usersv1.User_SlackHandle{SlackHandle: "@bob"}, Roles: []string{"dev"},
		Score: 3.25, Verified: false, Visits: 42,
		Profile: &usersv1.Profile{Bio: "Breaks things", Location: "Porto"},
	}
	u.setAvatar(u.byName["users/alice"], &httpbody.HttpBody{ContentType: "image/png", Data: []byte("\x89PNG\r\n\x1a\nalice")})
	return u
}

// get returns the stored user; the caller holds mu.
func (u *users) get(name string) (*usersv1.User, error) {
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, `name is required ("users/{id}")`)
	}
	usr, ok := u.byName[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "user %q not found", name)
	}
	return usr, nil
}

// setAvatar stores a copy of body for usr and records its digest; the caller
// holds mu.
func (u *users) setAvatar(usr *usersv1.User, body *httpbody.HttpBody) {
	a := proto.Clone(body).(*httpbody.HttpBody)
	if a.ContentType == "" {
		a.ContentType = "application/octet-stream"
	}
	u.avatars[usr.GetName()] = a
	sum := sha256.Sum256(a.GetData())
	usr.AvatarSha256 = sum[:]
}

// GetUser also takes a bare user id ("alice" for "users/alice"), which is
// what a composition has when the path gives only the id.
func (u *users) GetUser(_ context.Context, req *usersv1.GetUserRequest) (*usersv1.User, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	name := req.GetName()
	if name != "" && !strings.Contains(name, "/") {
		name = "users/" + name
	}
	usr, err := u.get(name)
	if err != nil {
		return nil, err
	}
	return proto.Clone(usr).(*usersv1.User), nil
}

// ListUsers returns users in name order. Filters combine with AND: states
// and roles match any of the listed values. page_token is the
// next_page_token of the previous page: the name the next page starts at.
func (u *users) ListUsers(_ context.Context, req *usersv1.ListUsersRequest) (*usersv1.ListUsersResponse, error) {
	if req.GetPageSize() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "page_size must be >= 0, got %d", req.GetPageSize())
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	names := make([]string, 0, len(u.byName))
	for n := range u.byName {
		if n >= req.GetPageToken() {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	out := &usersv1.ListUsersResponse{}
	for _, n := range names {
		usr := u.byName[n]
		if !matchUser(usr, req) {
			continue
		}
		if ps := int(req.GetPageSize()); ps > 0 && len(out.Users) == ps {
			out.NextPageToken = n
			break
		}
		out.Users = append(out.Users, proto.Clone(usr).(*usersv1.User))
	}
	return out, nil
}

func matchUser(usr *usersv1.User, req *usersv1.ListUsersRequest) bool {
	switch {
	case len(req.GetStates()) > 0 && !slices.Contains(req.GetStates(), usr.GetState()):
		return false
	case req.GetVerified() != nil && usr.GetVerified() != req.GetVerified().GetValue():
		return false
	case req.GetCreatedAfter() != nil && !usr.GetCreateTime().AsTime().After(req.GetCreatedAfter().AsTime()):
		return false
	case len(req.GetRoles()) > 0 && !slices.ContainsFunc(req.GetRoles(), func(r string) bool { return slices.Contains(usr.GetRoles(), r) }):
		return false
	}
	return true
}

func (u *users) CreateUser(_ context.Context, req *usersv1.CreateUserRequest) (*usersv1.User, error) {
	in := req.GetUser()
	if in == nil {
		return nil, status.Error(codes.InvalidArgument, "user is required")
	}
	if in.GetEmail() == "" {
		return nil, status.Error(codes.InvalidArgument, "user.email is required")
	}
	id := req.GetUserId()
	if strings.ContainsAny(id, "/ ") {
		return nil, status.Errorf(codes.InvalidArgument, "user_id %q must not contain '/' or spaces", id)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if id == "" {
		// Skip numbers a client already took as its own id.
		for id = fmt.Sprintf("u%d", u.nextID); u.byName["users/"+id] != nil; id = fmt.Sprintf("u%d", u.nextID) {
			u.nextID++
		}
	}
	name := "users/" + id
	if _, ok := u.byName[name]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "user %q already exists", name)
	}
	usr := proto.Clone(in).(*usersv1.User)
	usr.Name, usr.Id, usr.AvatarSha256 = name, u.nextID, nil
	u.nextID++
	if usr.CreateTime == nil {
		usr.CreateTime = timestamppb.Now()
	}
	if usr.State == usersv1.State_STATE_UNSPECIFIED {
		usr.State = usersv1.State_STATE_ACTIVE
	}
	u.byName[name] = usr
	return proto.Clone(usr).(*usersv1.User), nil
}

// UpdateUser applies update_mask: each path (proto or JSON field name,
// dotted into profile) is copied from user, an absent value clearing the
// field; "*" or an empty mask replaces every field. The output-only fields
// (name, id, create_time, avatar_sha256) are never changed; naming them in
// the mask is an InvalidArgument, like naming an unknown field.
func (u *users) UpdateUser(_ context.Context, req *usersv1.UpdateUserRequest) (*usersv1.User, error) {
	if req.GetUser() == nil {
		return nil, status.Error(codes.InvalidArgument, "user is required")
	}
	in := proto.Clone(req.GetUser()).(*usersv1.User) // stored below: no aliasing of the request
	u.mu.Lock()
	defer u.mu.Unlock()
	cur, err := u.get(in.GetName())
	if err != nil {
		return nil, err
	}
	paths := req.GetUpdateMask().GetPaths()
	var next *usersv1.User
	if len(paths) == 0 || slices.Contains(paths, "*") {
		if len(paths) > 1 {
			return nil, status.Error(codes.InvalidArgument, `update_mask: "*" must be the only path`)
		}
		next = in
	} else {
		next = proto.Clone(cur).(*usersv1.User)
		for _, p := range paths {
			if err := copyPath(next.ProtoReflect(), in.ProtoReflect(), p, strings.Split(p, "."), true); err != nil {
				return nil, err
			}
		}
	}
	next.Name, next.Id, next.CreateTime, next.AvatarSha256 = cur.Name, cur.Id, cur.CreateTime, cur.AvatarSha256
	u.byName[cur.Name] = next
	return proto.Clone(next).(*usersv1.User), nil
}

// outputOnly reports whether a User field is one a client cannot change.
func outputOnly(fd protoreflect.FieldDescriptor) bool {
	switch fd.Name() {
	case "name", "id", "create_time", "avatar_sha256":
		return true
	}
	return false
}

// copyPath copies the field at segs (a split field-mask path) from src to
// dst, clearing it in dst when src does not have it.
func copyPath(dst, src protoreflect.Message, path string, segs []string, top bool) error {
	fd := fieldByName(dst.Descriptor(), segs[0])
	switch {
	case fd == nil:
		return status.Errorf(codes.InvalidArgument, "update_mask: unknown field path %q", path)
	case top && outputOnly(fd):
		return status.Errorf(codes.InvalidArgument, "update_mask: field %q is output only", path)
	case len(segs) == 1:
		if src.Has(fd) {
			dst.Set(fd, src.Get(fd))
		} else {
			dst.Clear(fd)
		}
		return nil
	case fd.Message() == nil || fd.IsList() || fd.IsMap():
		return status.Errorf(codes.InvalidArgument, "update_mask: path %q: %s is not a message field", path, segs[0])
	}
	return copyPath(dst.Mutable(fd).Message(), src.Get(fd).Message(), path, segs[1:], false)
}

func fieldByName(md protoreflect.MessageDescriptor, name string) protoreflect.FieldDescriptor {
	if fd := md.Fields().ByName(protoreflect.Name(name)); fd != nil {
		return fd
	}
	return md.Fields().ByJSONName(name)
}

func (u *users) DeleteUser(_ context.Context, req *usersv1.DeleteUserRequest) (*emptypb.Empty, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, err := u.get(req.GetName()); err != nil {
		return nil, err
	}
	delete(u.byName, req.GetName())
	delete(u.avatars, req.GetName())
	return &emptypb.Empty{}, nil
}

// WatchUsers sends an "existing" event per stored user (name order), then
// req.count "tick" events, waiting interval_ms before each. It returns as
// soon as the stream's context ends.
func (u *users) WatchUsers(req *usersv1.WatchUsersRequest, stream grpc.ServerStreamingServer[usersv1.UserEvent]) error {
	if req.GetCount() < 0 || req.GetIntervalMs() < 0 {
		return status.Error(codes.InvalidArgument, "count and interval_ms must be >= 0")
	}
	ctx := stream.Context()
	list, err := u.ListUsers(ctx, &usersv1.ListUsersRequest{})
	if err != nil {
		return err
	}
	for _, usr := range list.GetUsers() {
		if err := stream.Send(&usersv1.UserEvent{Kind: "existing", User: usr}); err != nil {
			return err
		}
	}
	interval := time.Duration(req.GetIntervalMs()) * time.Millisecond
	for range req.GetCount() {
		if err := sleep(ctx, interval); err != nil {
			return status.FromContextError(err).Err()
		}
		if err := stream.Send(&usersv1.UserEvent{Kind: "tick"}); err != nil {
			return err
		}
	}
	return nil
}

func (u *users) GetAvatar(_ context.Context, req *usersv1.GetAvatarRequest) (*httpbody.HttpBody, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, err := u.get(req.GetName()); err != nil {
		return nil, err
	}
	a, ok := u.avatars[req.GetName()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "user %q has no avatar", req.GetName())
	}
	return proto.Clone(a).(*httpbody.HttpBody), nil
}

// SetAvatar stores the request body as the avatar; a missing content type
// is stored as application/octet-stream.
func (u *users) SetAvatar(_ context.Context, req *usersv1.SetAvatarRequest) (*usersv1.User, error) {
	if len(req.GetAvatar().GetData()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "avatar body is empty")
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	usr, err := u.get(req.GetName())
	if err != nil {
		return nil, err
	}
	u.setAvatar(usr, req.GetAvatar())
	return proto.Clone(usr).(*usersv1.User), nil
}
