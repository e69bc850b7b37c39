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
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	usersv1 "github.com/portico-dev/portico/protos/examples/users/v1"
)

type users struct {
	usersv1.UnimplementedUserServiceServer
	mu      sync.Mutex
	byName  map[string]*usersv1.User
	avatars map[string]*httpbody.HttpBody
	nextID  int64
}

// NewUsers returns a users service seeded with users/alice and users/bob.
func NewUsers() usersv1.UserServiceServer {
	created := timestamppb.New(time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC))
	attrs, _ := structpb.NewStruct(map[string]any{"plan": "pro", "seats": 5.0, "beta": true})
	u := &users{byName: map[string]*usersv1.User{}, avatars: map[string]*httpbody.HttpBody{}, nextID: 3}
	u.byName["users/alice"] = &usersv1.User{
		Name: "users/alice", DisplayName: "Alice", Email: "alice@example.com", Id: 1,
		State: usersv1.State_STATE_ACTIVE, CreateTime: created, Nickname: wrapperspb.String("al"),
		Labels: map[string]string{"team": "core"}, Attributes: attrs,
		Contact: &usersv1.User_Phone{Phone: "+1-555-0100"}, Roles: []string{"admin", "dev"},
		Score: 4.5, Verified: true, Visits: 9007199254740993, Profile: &usersv1.Profile{Bio: "Builds things", Location: "Lisbon"},
	}
	u.byName["users/bob"] = &usersv1.User{
		Name: "users/bob", DisplayName: "Bob", Email: "bob@example.com", Id: 2,
		State: usersv1.State_STATE_SUSPENDED, CreateTime: timestamppb.New(created.AsTime().Add(24 * time.Hour)),
		Contact: &usersv1.User_SlackHandle{SlackHandle: "@bob"}, Roles: []string{"dev"},
	}
	png := []byte("\x89PNG\r\n\x1a\nalice")
	u.avatars["users/alice"] = &httpbody.HttpBody{ContentType: "image/png", Data: png}
	sum := sha256.Sum256(png)
	u.byName["users/alice"].AvatarSha256 = sum[:]
	return u
}

func (u *users) get(name string) (*usersv1.User, error) {
	usr, ok := u.byName[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "user %q not found", name)
	}
	return usr, nil
}

func (u *users) GetUser(_ context.Context, req *usersv1.GetUserRequest) (*usersv1.User, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	usr, err := u.get(req.GetName())
	if err != nil {
		return nil, err
	}
	return proto.Clone(usr).(*usersv1.User), nil
}

func (u *users) ListUsers(_ context.Context, req *usersv1.ListUsersRequest) (*usersv1.ListUsersResponse, error) {
	if req.GetPageSize() < 0 {
		return nil, status.Error(codes.InvalidArgument, "page_size must be >= 0")
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	names := make([]string, 0, len(u.byName))
	for n := range u.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	out := &usersv1.ListUsersResponse{}
	for _, n := range names {
		usr := u.byName[n]
		if len(req.GetStates()) > 0 && !slices.Contains(req.GetStates(), usr.GetState()) {
			continue
		}
		if req.Verified != nil && usr.GetVerified() != req.GetVerified().GetValue() {
			continue
		}
		if req.CreatedAfter != nil && !usr.GetCreateTime().AsTime().After(req.GetCreatedAfter().AsTime()) {
			continue
		}
		if len(req.GetRoles()) > 0 && !slices.ContainsFunc(req.GetRoles(), func(r string) bool { return slices.Contains(usr.GetRoles(), r) }) {
			continue
		}
		out.Users = append(out.Users, proto.Clone(usr).(*usersv1.User))
		if ps := req.GetPageSize(); ps > 0 && len(out.Users) == int(ps) {
			break
		}
	}
	return out, nil
}

func (u *users) CreateUser(_ context.Context, req *usersv1.CreateUserRequest) (*usersv1.User, error) {
	in := req.GetUser()
	if in == nil {
		return nil, status.Error(codes.InvalidArgument, "user is required")
	}
	if in.GetEmail() == "" {
		return nil, status.Error(codes.InvalidArgument, "user.email is required")
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	id := req.GetUserId()
	if id == "" {
		id = fmt.Sprintf("u%d", u.nextID)
	}
	name := "users/" + id
	if _, ok := u.byName[name]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "user %q already exists", name)
	}
	usr := proto.Clone(in).(*usersv1.User)
	usr.Name, usr.Id = name, u.nextID
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

func (u *users) UpdateUser(_ context.Context, req *usersv1.UpdateUserRequest) (*usersv1.User, error) {
	in := req.GetUser()
	if in == nil {
		return nil, status.Error(codes.InvalidArgument, "user is required")
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	cur, err := u.get(in.GetName())
	if err != nil {
		return nil, err
	}
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		next := proto.Clone(in).(*usersv1.User)
		next.Name, next.Id, next.CreateTime = cur.Name, cur.Id, cur.CreateTime
		u.byName[cur.Name] = next
		return proto.Clone(next).(*usersv1.User), nil
	}
	next := proto.Clone(cur).(*usersv1.User)
	for _, p := range paths {
		switch strings.TrimSpace(p) {
		case "display_name", "displayName":
			next.DisplayName = in.DisplayName
		case "email":
			next.Email = in.Email
		case "state":
			next.State = in.State
		case "labels":
			next.Labels = in.Labels
		case "roles":
			next.Roles = in.Roles
		case "nickname":
			next.Nickname = in.Nickname
		case "profile":
			next.Profile = in.Profile
		default:
			return nil, status.Errorf(codes.InvalidArgument, "update_mask: unknown or immutable path %q", p)
		}
	}
	u.byName[cur.Name] = next
	return proto.Clone(next).(*usersv1.User), nil
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

func (u *users) WatchUsers(req *usersv1.WatchUsersRequest, stream grpc.ServerStreamingServer[usersv1.UserEvent]) error {
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
	for i := int32(0); i < req.GetCount(); i++ {
		if err := sleep(ctx, time.Duration(req.GetIntervalMs())*time.Millisecond); err != nil {
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

func (u *users) SetAvatar(_ context.Context, req *usersv1.SetAvatarRequest) (*usersv1.User, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	usr, err := u.get(req.GetName())
	if err != nil {
		return nil, err
	}
	if len(req.GetAvatar().GetData()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "avatar body is empty")
	}
	u.avatars[usr.Name] = proto.Clone(req.GetAvatar()).(*httpbody.HttpBody)
	sum := sha256.Sum256(req.GetAvatar().GetData())
	usr.AvatarSha256 = sum[:]
	return proto.Clone(usr).(*usersv1.User), nil
}
